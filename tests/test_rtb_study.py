"""The study command of docs/rtb.md on the smoke configs: it trains, evaluates and keeps the prior for a second run."""

from __future__ import annotations

from orchestrator.families.rtb.study import main


def test_the_digits_and_inverse_studies_run_and_reuse_their_prior(tmp_path, capsys):
    prior = tmp_path / "prior.pt"
    main(["digits", "--smoke", "--iters", "2", "--eval-every", "1", "--cosine", "--prior", str(prior)])
    out = capsys.readouterr().out
    assert "prior trained" in out and prior.exists()
    lines = out.splitlines()[1:]
    assert [line.split()[0] for line in lines] == ["it=0", "it=1", "train", "it=2", "train"]
    assert "mean_log_r=" in lines[0] and "exact_mean_log_r=" in lines[0] and "exact_fd=" in lines[0]
    assert "train/grad_norm=" in lines[2] and "train/loss=" in lines[4]  # the training metrics since it=1
    main(["digits", "--smoke", "--iters", "1", "--prior", str(prior), "--set", "batch_size=2"])
    assert "prior trained" not in capsys.readouterr().out  # loaded from the file
    main(["inverse", "--smoke", "--iters", "1", "--dps", "1", "--set", "guided_share=1"])
    out = capsys.readouterr().out
    assert "dps zeta'=1.0" in out and "psnr_mean=" in out and "it=1" in out
    # the in-process buffer: steps 0-1 forward and from x* (empty buffer), 2-3 from the buffer's rows of step 0
    main(["inverse", "--smoke", "--iters", "4", "--eval-every", "2", "--replay", "--set", "backtrack_every=2"])
    out = capsys.readouterr().out
    assert "it=2 " in out and "buffer=4 " in out and "buffer=8 " in out  # batch 4: one forward iteration per 2
