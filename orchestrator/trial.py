"""The Tune trainable: one trial of a sweep, whatever the workload.

restore from Tune's checkpoint (resume, PBT, retry) -> loop:
    driver.advance()  (train to the next evaluation, evaluate)
    log artifacts to the trial's MLflow run, checkpoint, tune.report
and when an actor dies: wait for Ray to restart it, reload the last checkpoint, go on.

Checkpoints are read with `torch.load(weights_only=True)`: on a cluster they come from a bucket, and whoever can
write there must not run code on the head. A driver's state is therefore written as containers (dict, list, tuple),
tensors, numbers, strings and None only; numpy arrays and scalars (replay buffers) travel as tagged tensors
(`to_checkpoint`, `from_checkpoint`), and any other type is refused when the checkpoint is written.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune

from orchestrator.placement import ACTOR_ERRORS, TrialContext
from orchestrator.registry import get_family
from orchestrator.spec import SweepSpec
from orchestrator.tracking import IMAGES_KEY, PLACEMENT_KEY, TrialArtifacts

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
FINAL_SEND_S = 10.0
"""How long a trial's end waits for a store that is away, before leaving its files to the sweep's end."""
MAX_RECOVERIES = 5
NUMPY_ARRAY = "__numpy_array__"
NUMPY_SCALAR = "__numpy_scalar__"
"""A numpy array (scalar) in a checkpoint: {NUMPY_ARRAY: tensor}, the tensor of the same dtype and values."""
_PLAIN = (str, int, float, bool, type(None), bytes, torch.Tensor, torch.Size, torch.dtype, torch.device)
"""What `torch.load(weights_only=True)` builds as it is (besides dict, OrderedDict, list and tuple)."""


def to_checkpoint(state: Any, where: str = "state") -> Any:
    """A driver's state in the types `torch.load(weights_only=True)` reads; TypeError naming the first value of
    another type (`where` is its path)."""
    if isinstance(state, np.ndarray | np.generic):
        try:
            tensor = torch.from_numpy(np.array(state, order="C"))  # a writable copy (Ray's are read-only)
        except TypeError as error:
            raise TypeError(
                f"checkpoint: {where} is a numpy array of dtype {state.dtype}, which torch cannot hold"
            ) from error
        return {NUMPY_SCALAR: tensor} if isinstance(state, np.generic) else {NUMPY_ARRAY: tensor}
    if type(state) in (dict, OrderedDict):
        out = copy.copy(state)  # of the same type, with its attributes (a module's state_dict has `_metadata`)
        for key, value in state.items():
            out[key] = to_checkpoint(value, f"{where}[{key!r}]")
        return out
    if type(state) in (list, tuple):
        return type(state)(to_checkpoint(value, f"{where}[{i}]") for i, value in enumerate(state))
    if isinstance(state, _PLAIN):
        return state
    raise TypeError(
        f"checkpoint: {where} is a {type(state).__module__}.{type(state).__qualname__}; a driver's state holds "
        f"containers, tensors, numpy arrays, numbers, strings and None only (checkpoints are loaded weights-only)"
    )


def from_checkpoint(state: Any) -> Any:
    """The inverse of `to_checkpoint`."""
    if isinstance(state, dict):
        if len(state) == 1 and NUMPY_ARRAY in state:
            return state[NUMPY_ARRAY].numpy()
        if len(state) == 1 and NUMPY_SCALAR in state:
            return state[NUMPY_SCALAR].numpy()[()]
        out = copy.copy(state)
        for key, value in state.items():
            out[key] = from_checkpoint(value)
        return out
    if type(state) in (list, tuple):
        return type(state)(from_checkpoint(value) for value in state)
    return state


def save_state(state: Any, path: Path) -> None:
    torch.save(to_checkpoint(state), path)


def load_state(path: Path) -> Any:
    """A state `save_state` wrote; weights only: a file that would build other objects raises UnpicklingError."""
    return from_checkpoint(torch.load(path, map_location="cpu", weights_only=True))


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
    train_every = spec.train_every(config)
    tracking_uri = tracking["tracking_uri"] if tracking else None
    ctx = TrialContext(spec, config, trial_seed(spec.seed, trial_id), trial_id, train_every, tracking_uri)
    artifacts = None
    if tracking:
        outbox = Path(tracking["outbox"]) / trial_id if tracking.get("outbox") else None
        artifacts = TrialArtifacts(tracking["tracking_uri"], tracking["experiment_id"], trial_id, outbox)

    sys.unraisablehook = _quiet_exit_at_sigterm
    driver = get_family(spec.workload).load_driver()(ctx)
    try:
        _train(driver, ctx, artifacts)
    finally:
        stop_actors(driver)
        if artifacts is not None:  # what the store did not take now is sent at the sweep's end
            artifacts.flush(FINAL_SEND_S)


def stop_actors(driver: Any) -> None:
    """End the trial's actors now, at once. Left to Ray, they are ended when the trial's process exits, by a SIGTERM
    that Ray turns into SystemExit inside whatever runs then (e.g. `ActorHandle.__del__` in a learner that holds other
    actors' handles): a traceback on a clean finish."""
    for actor in driver.actors():
        with contextlib.suppress(ray.exceptions.RayError):
            ray.kill(actor, no_restart=True)


def _quiet_exit_at_sigterm(unraisable: Any) -> None:
    """Ray ends the trial's process with a SIGTERM that it turns into SystemExit inside whatever Python code runs
    then; inside a weakref callback or a `__del__` (e.g. `WeakSet._remove` at a garbage collection) the exception
    cannot propagate and Python prints `Exception ignored in ... SystemExit`: noise on a clean finish. Every other
    unraisable exception is still printed."""
    if not issubclass(unraisable.exc_type, SystemExit):
        sys.__unraisablehook__(unraisable)


def _train(driver: Any, ctx: TrialContext, artifacts: TrialArtifacts | None) -> None:
    """Restore the last checkpoint if there is one, then advance, checkpoint and report to the end of the budget."""
    trial_id = ctx.trial_id
    last_state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            last_state = load_state(Path(folder) / STATE_FILE)
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
            save_state(last_state, Path(folder) / STATE_FILE)
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
