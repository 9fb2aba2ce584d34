"""The Tune trainable: one trial of a sweep, whatever the workload.

restore from Tune's checkpoint (resume, PBT, retry) -> loop:
    driver.advance()  (train to the next evaluation, evaluate)
    log artifacts to the trial's MLflow run, checkpoint, tune.report
and when an actor dies: wait for Ray to restart it, reload the last checkpoint, go on.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from orchestrator.placement import ACTOR_ERRORS, TrialContext
from orchestrator.registry import get_family
from orchestrator.spec import SweepSpec
from orchestrator.tracking import IMAGES_KEY, PLACEMENT_KEY, TrialArtifacts

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
MAX_RECOVERIES = 5


def trial_seed(base_seed: int, trial_id: str) -> int:
    """Tune trial ids end in a sequence number ('abc12_00003'): seed + 3, stable on resume."""
    suffix = trial_id.rsplit("_", 1)[-1]
    return base_seed + (int(suffix) if suffix.isdigit() else abs(hash(trial_id)) % 10_000)


def run_trial(point: dict[str, Any], spec: SweepSpec, tracking: dict[str, str] | None = None) -> None:
    """`point`: the sampled search-space values by dotted key (`optim.lr`, `variants.method`); `spec`: the
    validated sweep. The trial's config is resolved from them once, here."""
    # Tune announces every checkpoint at INFO; progress is the driver's job.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    config = spec.resolved_config(point)
    context = tune.get_context()
    trial_id = context.get_trial_id()
    train_every = max(1, config.total_iters // spec.mlflow.train_points)
    ctx = TrialContext(spec, config, trial_seed(spec.seed, trial_id), trial_id, train_every)
    artifacts = TrialArtifacts(tracking["tracking_uri"], tracking["experiment_id"], trial_id) if tracking else None

    driver = get_family(spec.workload).load_driver()(ctx)
    last_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            last_state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
        driver.load_state(last_state)

    recoveries = 0
    while not driver.finished:
        try:
            metrics, files = driver.advance()
            state = driver.state()  # in the try: an actor may die between the two calls as well
        except ACTOR_ERRORS as error:
            recoveries += 1
            if recoveries > MAX_RECOVERIES:
                raise
            log.warning(
                "trial %s: an actor died (%s); restoring step %s",
                trial_id,
                type(error).__name__,
                "0" if last_state is None else "of the last checkpoint",
            )
            driver.recover(last_state)
            continue
        step, last_state = driver.step, state
        images = 0
        if artifacts is not None and files:
            images = artifacts.log_files(files, f"eval/step_{step:07d}", step=step)
        with tempfile.TemporaryDirectory() as folder:
            torch.save(last_state, Path(folder) / STATE_FILE)
            # placement: the node of the trial function and of each actor now; the MLflow callback tags the run.
            tune.report(
                {
                    **metrics,
                    "step": step,
                    "recoveries": recoveries,
                    "device": driver.device,
                    IMAGES_KEY: images,
                    PLACEMENT_KEY: ctx.placement(),
                },
                checkpoint=tune.Checkpoint.from_directory(folder),
            )
