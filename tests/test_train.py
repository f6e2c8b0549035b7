"""Training: deterministic with a seed, exact resume, checkpoints tied to their model, clear errors."""
import dataclasses
import json
import math

import torch
from click.testing import CliRunner

import pytest
from qdm_bench.cli.main import main
from qdm_bench.evaluate.train import CheckpointError, TrainConfig, load_checkpoint, train

TINY = dict(model="qdm-t", images="phantoms", image_size=64, holdout=1, crop=32, batch=2, seed=3)


def _weights(path):
    return load_checkpoint(path)[0].state_dict()


def test_same_seed_same_weights_and_exact_resume(tmp_path):
    a = train(TrainConfig(steps=4, ckpt_every=4, **TINY), tmp_path / "a")
    b = train(TrainConfig(steps=4, ckpt_every=4, **TINY), tmp_path / "b")
    first = torch.load(train(TrainConfig(steps=2, ckpt_every=2, **TINY), tmp_path / "c"), weights_only=True)
    c = train(TrainConfig(steps=4, ckpt_every=2, **TINY), tmp_path / "c")  # resumes from step 2
    resumed = torch.load(c, weights_only=True)
    assert 0 < first["train_seconds"] < resumed["train_seconds"]  # wall time accumulates over resumed runs
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert all(torch.equal(wa[k], wc[k]) for k in wa), "an interrupted run must end with the same weights"
    model, ckpt = load_checkpoint(a, "qdm-t")
    assert ckpt["step"] == 4 and len(ckpt["losses"]) == 4 and ckpt["held_out"] == ["ct_phantom_noisy"]
    assert not torch.equal(wa["downstream.final_layer.linear.weight"],
                           torch.zeros_like(wa["downstream.final_layer.linear.weight"])), "training moved weights"


def test_loss_decreases_on_a_tiny_run(tmp_path):
    path = train(TrainConfig(steps=40, ckpt_every=40, lr=1e-3, **TINY), tmp_path / "r")
    losses = load_checkpoint(path)[1]["losses"]
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10


def test_checkpoint_for_another_model_is_refused(tmp_path):
    path = train(TrainConfig(steps=1, ckpt_every=1, **TINY), tmp_path / "a")
    with pytest.raises(CheckpointError, match="holds model 'qdm-t', not 'qdm-s'"):
        load_checkpoint(path, "qdm-s")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(bad)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a qdm-bench checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")


def test_resume_with_other_options_is_refused(tmp_path):
    train(TrainConfig(steps=1, ckpt_every=1, **TINY), tmp_path / "a")
    with pytest.raises(ValueError, match="different configuration"):
        train(TrainConfig(steps=2, ckpt_every=1, **dict(TINY, batch=3)), tmp_path / "a")


def test_train_cli_and_bad_input(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["train", "-m", "qdm-t", "--images", "phantoms", "--image-size", "64", "--holdout", "1",
                              "--crop", "32", "--batch", "2", "--steps", "2", "--run-dir", str(tmp_path / "run")])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "run" / "last.pt").exists()
    bad = runner.invoke(main, ["train", "-m", "qdm-t", "--crop", "40", "--steps", "1", "--run-dir", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "multiples of 16" in bad.output.strip().splitlines()[-1]
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = runner.invoke(main, ["train", "--images", str(empty), "--steps", "1", "--run-dir", str(tmp_path / "y")])
    assert bad.exit_code != 0 and "no images" in bad.output.strip().splitlines()[-1]


@pytest.mark.parametrize("name", ["bi-diffsr", "dualdomain-resshift"])
def test_other_designs_train_and_score_with_their_own_process(name, tmp_path):
    """BI-DiffSR (DDPM ε-loss) and the dual-domain model (multiscale loss) train and sample through the same CLI."""
    from click.testing import CliRunner

    from qdm_bench.cli.main import main

    runner = CliRunner()
    res = runner.invoke(main, ["train", "-m", name, "--images", "phantoms", "--image-size", "32", "--holdout", "1",
                               "--crop", "32", "--batch", "2", "--steps", "2", "--threads", "1", "--run-dir",
                               str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["model"] == name and len(ckpt["losses"]) == 2 and all(math.isfinite(v) for v in ckpt["losses"])
    res = runner.invoke(main, ["quality", "--ckpt", str(tmp_path / "run" / "last.pt"), "--device", "cpu",
                               "--thresholds", "full,0.15", "--posteriors", "paper,reference",
                               "-o", str(tmp_path / "q.jsonl")])
    assert res.exit_code == 0, res.output
    assert "PSNR-Y" in res.output
    (row,) = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text().splitlines()]  # masks are QDM's
    assert row["threshold"] is None and row["posterior"] is None


def test_kappa_and_residual_are_refused_for_other_processes(tmp_path):
    cfg = TrainConfig(model="dualdomain-resshift", images="phantoms", image_size=32, holdout=1, crop=32, batch=1,
                      steps=1, prediction="residual")
    with pytest.raises(ValueError, match="ResShift-family"):
        train(cfg, tmp_path)
    with pytest.raises(ValueError, match="kappa applies"):
        train(dataclasses.replace(cfg, prediction="x0", kappa=0.5), tmp_path)


def test_preconditioned_skip_is_the_least_squares_estimate_of_the_residual():
    """Oracle: for x_t − y0 = (1−η)r + σε with r ~ N(0, s²), E[r | x_t] = (1−η)s²/((1−η)²s² + σ²)·(x_t − y0)."""
    from qdm.diffusion import ResShiftDiffusion, eta_schedule
    from qdm_bench.evaluate.train import PreconditionedResidual

    class Zero(torch.nn.Module):
        def forward(self, x_t, t, lq, mask=None):
            return torch.zeros_like(x_t)

    sched, s = eta_schedule(kappa=0.5), 0.13
    model, diff = PreconditionedResidual(Zero(), sched, s), ResShiftDiffusion(sched)
    g = torch.Generator().manual_seed(0)
    y0 = torch.zeros(4096, 1, 1, 1)
    x0 = s * torch.randn(y0.shape, generator=g)  # residual r = x0 − y0 with RMS s
    lq = y0
    for i in (0, 7, 14):
        t = torch.full((y0.shape[0],), i)
        x_t = diff.q_sample(x0, y0, t, noise=torch.randn(y0.shape, generator=g))
        pred = model(diff.scale_input(x_t, t), t, lq)
        eta, sigma2 = float(sched.etas[i]), 0.25 * float(sched.etas[i])
        best = (1 - eta) * s * s / ((1 - eta) ** 2 * s * s + sigma2)
        assert torch.allclose(pred, best * x_t, atol=1e-5)
        fitted = float((x0 * x_t).sum() / (x_t * x_t).sum())  # empirical least-squares slope
        assert fitted == pytest.approx(best, rel=0.1, abs=0.02)
        left = float((x0 - best * x_t).std())  # what remains for the network: c_out is its standard deviation
        assert float(model._out[i]) == pytest.approx(left, rel=0.05)
    assert float(model._skip[0]) > 0.9 and float(model._skip[-1]) < 0.05


def test_preconditioned_checkpoint_round_trip(tmp_path):
    cfg = TrainConfig(**{**TINY, "steps": 2, "prediction": "preconditioned", "kappa": 0.5})
    last = train(cfg, tmp_path)
    model, ckpt = load_checkpoint(last)
    from qdm_bench.evaluate.train import PreconditionedResidual

    assert isinstance(model, PreconditionedResidual) and ckpt["config"]["kappa"] == 0.5
    assert set(ckpt["state_dict"]) == set(model.module.state_dict())  # checkpoints hold the bare network
