"""The RTB image benchmark end to end on a tiny config: a prior of a few steps, three variants in spawned processes."""

from __future__ import annotations

import math

from orchestrator.families.rtb.benchmark import main

TINY = [
    "--prior-iters=5",
    "--iters=2",
    "--warmup=1",
    "--repeats=1",
    "--set=prior.block_out_channels=[16, 32]",
    "--set=prior.batch_size=16",
    "--set=prior.num_images=256",
    "--set=prior.warmup_iters=1",
    "--set=prior.sampling_steps=10",
    "--set=reward=mean_intensity",
    "--set=batch_size=4",
]


def test_benchmark_prints_the_three_variants(capsys):
    main(TINY)
    out = capsys.readouterr().out
    assert "batch    4:" in out and "batch  128:" in out  # prior samples at the config's batch and the eval chunk
    rows = {line.split("|")[1].strip(): line.split("|")[2:6] for line in out.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"copy", "lora", "subset"}
    for name in ("copy", "lora", "subset"):
        it_s, s_it, peak, increment = (float(cell) for cell in rows[name])
        assert all(math.isfinite(x) and x > 0 for x in (it_s, s_it, peak, increment)), (name, rows[name])
    assert "copy / lora:" in out and "subset / lora:" in out and "load average" in out
