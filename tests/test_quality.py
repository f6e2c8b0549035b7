"""Quality metrics against closed-form oracles, the residual prediction wrapper, and the quality CLI end to end."""
from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from qdm_bench.evaluate import metrics as m
from qdm_bench.evaluate import quality as q
from qdm_bench.cli.main import main
from qdm_bench.evaluate.train import ResidualPrediction, TrainConfig, load_checkpoint, train


def _gray(v: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) gray image with R = G = B = v."""
    return v.expand(-1, 3, -1, -1).clone()


def test_y_channel_is_bt601():
    img = torch.zeros(3, 3, 2, 2)
    img[0] = 1.0  # white
    img[2, 0] = 1.0  # pure red
    y = m.y_channel(img)
    assert torch.allclose(y[0], torch.full((2, 2), 235.0, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(y[1], torch.full((2, 2), 16.0, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(y[2], torch.full((2, 2), 16 + 65.481, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("crop", [0, 4])
def test_psnr_y_matches_closed_form(crop):
    g = torch.Generator().manual_seed(0)
    hr = _gray(0.2 + 0.5 * torch.rand(2, 1, 32, 32, generator=g))
    d = 0.01
    sr = hr + d
    expected = 10 * math.log10(255.0 ** 2 / (219.0 * d) ** 2)  # Y = 16 + 219·v on gray images
    got = m.psnr_y(sr, hr, crop=crop)
    assert got.shape == (2,)
    assert torch.allclose(got, torch.full((2,), expected, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(m.psnr_rgb(sr, hr, crop), torch.full((2,), 10 * math.log10(1 / d ** 2),
                                                                 dtype=torch.float64), atol=1e-6)


def test_psnr_crop_ignores_the_border():
    hr = _gray(torch.full((1, 1, 32, 32), 0.5))
    sr = hr.clone()
    sr[..., :4, :] = 0.9  # damage only the top 4 rows
    assert math.isinf(float(m.psnr_y(sr, hr, crop=4)))
    assert float(m.psnr_y(sr, hr, crop=0)) < 30


def test_ssim_y_identity_and_monotone():
    g = torch.Generator().manual_seed(1)
    hr = torch.rand(1, 3, 48, 48, generator=g)
    assert float(m.ssim_y(hr, hr)) == pytest.approx(1.0)
    noise = torch.randn(hr.shape, generator=g)
    s1 = float(m.ssim_y((hr + 0.02 * noise).clamp(0, 1), hr))
    s2 = float(m.ssim_y((hr + 0.1 * noise).clamp(0, 1), hr))
    assert 1.0 > s1 > s2 > 0


def test_metrics_refuse_minus_one_to_one_range_and_bad_shapes():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        m.psnr_y(-torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="differ in shape"):
        m.psnr_y(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 16))
    with pytest.raises(ValueError, match="crop"):
        m.psnr_y(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8), crop=4)


def test_learned_metrics_without_weights_are_not_available_never_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    m.learned_metric.cache_clear()
    try:
        x = torch.rand(1, 3, 32, 32)
        values, notes = m.score(x, x, metrics=("psnr", "lpips", "musiq", "clipiqa"))
    finally:
        m.learned_metric.cache_clear()
    assert values["lpips"] == [None] and values["musiq"] == [None] and values["clipiqa"] == [None]
    assert math.isinf(values["psnr"][0])
    text = " | ".join(notes)
    assert f"not available: place alexnet-owt-7be5be79.pth in {tmp_path / 'hub' / 'checkpoints'}" in text
    assert "musiq_koniq_ckpt-e95806b9.pth" in text and "RN50.pt" in text


def test_psnr_agrees_with_pyiqa_where_pyiqa_works():
    try:
        import pyiqa
    except Exception:  # noqa: BLE001 - pyiqa needs a working torchvision (not in the CPU CI environment)
        pytest.skip("pyiqa is not importable here (needs torchvision)")
    g = torch.Generator().manual_seed(2)
    hr = torch.rand(1, 3, 32, 32, generator=g)
    sr = (hr + 0.03 * torch.randn(hr.shape, generator=g)).clamp(0, 1)
    ref = pyiqa.create_metric("psnr", test_y_channel=True, color_space="ycbcr", device="cpu")
    assert float(m.psnr_y(sr, hr)) == pytest.approx(float(ref(sr, hr)), abs=1e-3)


def test_residual_wrapper_adds_bicubic_and_passes_attributes():
    class Zero(torch.nn.Module):
        window = 8

        def forward(self, x_t, t, lq, mask=None):
            return torch.zeros_like(x_t)

    wrapped = ResidualPrediction(Zero())
    lq = torch.rand(1, 3, 8, 8) * 2 - 1
    x = torch.randn(1, 3, 32, 32)
    y0 = torch.nn.functional.interpolate(lq, size=(32, 32), mode="bicubic", align_corners=False)
    assert torch.equal(wrapped(x, torch.zeros(1, dtype=torch.long), lq), y0)
    assert wrapped.window == 8


@pytest.fixture(scope="module")
def untrained_residual_ckpt(tmp_path_factory):
    """A residual qdm-t 'trained' with lr 0: its output layer is still zero, so it predicts exactly y0 (bicubic)."""
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(model="qdm-t", images="phantoms", image_size=64, holdout=1, crop=32, batch=2, steps=1, lr=0.0,
                      prediction="residual", threads=1)
    return train(cfg, out, resume=False)


def test_untrained_residual_model_scores_exactly_bicubic(untrained_residual_ckpt):
    """Oracle: x̂0 = y0 at every step makes the sampler return y0, so SR quality equals the bicubic floor."""
    model, ckpt = load_checkpoint(untrained_residual_ckpt)
    assert isinstance(model, ResidualPrediction) and ckpt["config"]["prediction"] == "residual"
    runner = CliRunner()
    res = runner.invoke(main, ["quality", "--ckpt", str(untrained_residual_ckpt), "--thresholds", "full,0.15",
                               "--samplers", "deterministic,stochastic", "--tile", "0", "-o",
                               str(untrained_residual_ckpt.parent / "q.jsonl"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (untrained_residual_ckpt.parent / "q.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {(r["threshold"], r["sampler"]) for r in rows} == {
        (None, "stochastic"), (0.15, "stochastic"), (None, "deterministic"), (0.15, "deterministic")}
    for r in rows:
        assert r["status"] == "ok" and r["image"] == "phantoms:ct_phantom_noisy"  # the held-out image
        assert r["psnr"] == pytest.approx(r["bicubic_psnr"], abs=1e-9)
        assert r["ssim"] == pytest.approx(r["bicubic_ssim"], abs=1e-9)
        assert r["macs"] > 0 and r["ckpt"] == str(untrained_residual_ckpt)
        assert r["lpips"] is None and "not available" in (r["message"] or "")
    full, sparse = sorted([r for r in rows if r["sampler"] == "stochastic"], key=lambda r: r["threshold"] is not None)
    assert sparse["patch_density"] < 1.0 and sparse["macs"] < full["macs"]
    assert "PSNR-Y" in res.output and "bicubic PSNR-Y" in res.output


def test_tiled_quality_counts_the_macs_of_the_tiles(untrained_residual_ckpt, tmp_path):
    """--tile auto samples 32x32 tiles (the training crop) as one batch; MACs are those of that batch."""
    from qdm_bench.measure.macs import count_macs

    out = tmp_path / "tiled.jsonl"
    res = CliRunner().invoke(main, ["quality", "--ckpt", str(untrained_residual_ckpt), "-o", str(out),
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["tile"] == 32 and "4 independent 32x32 tiles" in row["message"]
    assert row["macs"] == count_macs("qdm-t", 32, batch=4).macs
    assert abs(row["psnr"] - row["bicubic_psnr"]) < 0.5  # tile borders differ slightly from whole-image bicubic


def test_threshold_ablation_gains_quality_columns(untrained_residual_ckpt, tmp_path):
    out = tmp_path / "abl.jsonl"
    res = CliRunner().invoke(main, ["ablate", "threshold", "-m", "qdm-t", "--images", "phantoms", "--limit", "1",
                                    "--image-size", "64", "--thresholds", "0.15", "--ckpt",
                                    str(untrained_residual_ckpt), "--posterior", "reference", "-o", str(out),
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["threshold"], r["posterior"]) for r in rows] == [(None, None), (0.15, "reference")]
    assert all(r["psnr"] is not None and r["bicubic_psnr"] is not None for r in rows)
    from qdm_bench.report import load_rows, threshold_table

    table = threshold_table(load_rows([out]))
    assert "PSNR-Y (dB)" in table.columns and "SSIM-Y" in table.columns


def test_quality_bad_input_is_one_line(untrained_residual_ckpt, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["quality", "--ckpt", str(tmp_path / "missing.pt")])
    assert res.exit_code != 0 and "does not exist" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["quality", "--ckpt", str(untrained_residual_ckpt), "-m", "unet"])
    assert res.exit_code != 0 and "holds model 'qdm-t'" in res.output
    res = runner.invoke(main, ["ablate", "threshold", "-m", "qdm-t", "--ckpt", str(untrained_residual_ckpt),
                               "--image-size", "64", "--res", "128"])
    assert res.exit_code != 0 and "--res" in res.output


@pytest.fixture(scope="module")
def briefly_trained_ckpt(tmp_path_factory):
    """A residual qdm-t after two real steps (κ = 0.5): its prediction is no longer y0, so samplers differ."""
    cfg = TrainConfig(model="qdm-t", images="phantoms", image_size=64, holdout=1, crop=32, batch=2, steps=2, lr=1e-2,
                      prediction="residual", kappa=0.5, threads=1)
    return train(cfg, tmp_path_factory.mktemp("brief"), resume=False)


def _direct_psnr(ckpt, posterior: str = "paper", seeds=(0,), **sample_kwargs) -> float:
    """PSNR-Y of ResShiftDiffusion run directly on the held-out phantom's LR (the mean over ``seeds``)."""
    from qdm.diffusion import ResShiftDiffusion, eta_schedule
    from qdm_bench.data.images import degrade, load_image_set, lr_condition

    model, _ = load_checkpoint(ckpt)
    (img,) = [i for i in load_image_set("phantoms", size=64) if i.name == "ct_phantom_noisy"]
    hr = img.hr[None].float()
    diffusion = ResShiftDiffusion(eta_schedule(kappa=0.5), posterior=posterior)
    with torch.inference_mode():
        sr = sum(diffusion.sample(model.eval(), lr_condition(degrade(hr, 4)), sf=4, seed=seed, **sample_kwargs).sr
                 for seed in seeds) / len(seeds)
    return float(m.psnr_y(((sr + 1) / 2).clamp(0, 1), hr, crop=4)[0])


def test_posteriors_give_one_masked_cell_each_and_reach_the_sampler(briefly_trained_ckpt, tmp_path):
    """--posteriors paper,reference: the full mask once (both forms coincide there), each threshold once per form;
    the reference row equals ResShiftDiffusion(posterior="reference") run directly on the same LR and mask."""
    ckpt = briefly_trained_ckpt
    out = tmp_path / "q.jsonl"
    res = CliRunner().invoke(main, ["quality", "--ckpt", str(ckpt), "--thresholds", "full,0.15", "--samplers",
                                    "deterministic", "--posteriors", "paper,reference", "--tile", "0", "-o", str(out),
                                    "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = {(r["threshold"], r["posterior"]): r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {(None, None), (0.15, "paper"), (0.15, "reference")}
    assert rows[(0.15, "paper")]["psnr"] != rows[(0.15, "reference")]["psnr"]
    assert rows[(0.15, "paper")]["macs"] == rows[(0.15, "reference")]["macs"]  # same mask, same cost

    expected = _direct_psnr(ckpt, "reference", threshold=0.15, deterministic=True)
    assert rows[(0.15, "reference")]["psnr"] == pytest.approx(expected, abs=1e-9)

    from qdm_bench.report import load_rows, threshold_table

    table = threshold_table(load_rows([out]))
    assert list(table["posterior"]) == ["", "paper", "reference"]  # full mask first, then each form


def test_cli_posterior_modes_are_the_samplers():
    from qdm.diffusion import POSTERIOR_MODES
    from qdm_bench.cli import options as cli

    assert cli.POSTERIOR_MODES == POSTERIOR_MODES
    res = CliRunner().invoke(main, ["quality", "--ckpt", "x.pt", "--posteriors", "eq4"])
    assert res.exit_code != 0 and "paper and/or reference" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["ablate", "threshold", "--posterior", "reference"])
    assert res.exit_code != 0 and "--ckpt" in res.output


def test_ensemble_scores_the_mean_of_consecutive_seeds(briefly_trained_ckpt):
    """--ensemble 1,3: the 3-sample row scores the mean of the seed-0..2 samples and costs 3x per SR; the
    deterministic sampler gets no ensemble (one result), and an ensemble of a deterministic cell is refused."""
    import dataclasses

    from qdm_bench.measure.core import measure_cell

    ckpt = str(briefly_trained_ckpt)
    cells = q.quality_cells(ckpt, thresholds=[None], samplers=("stochastic", "deterministic"), ensembles=(1, 3),
                            tile=0, device="cpu")
    assert [(c.sampling.sampler, c.sampling.ensemble) for c in cells] == [("stochastic", 1), ("stochastic", 3), ("deterministic", 1)]
    one, three = measure_cell(cells[0]), measure_cell(cells[1])
    assert three["ensemble"] == 3 and three["macs_per_sr"] == 3 * one["macs_per_sr"] == 3 * 15 * one["macs"]
    assert "mean of 3 stochastic samples (seeds 0..2)" in three["message"]
    assert three["psnr"] == pytest.approx(_direct_psnr(ckpt, seeds=(0, 1, 2)), abs=1e-6)  # summation order
    assert one["psnr"] == pytest.approx(_direct_psnr(ckpt, seeds=(0,)), abs=1e-9) != three["psnr"]
    with pytest.raises(ValueError, match="averages stochastic samples"):
        measure_cell(dataclasses.replace(cells[2], sampling=dataclasses.replace(cells[2].sampling, ensemble=2)))
    res = CliRunner().invoke(main, ["quality", "--ckpt", ckpt, "--ensemble", "0"])
    assert res.exit_code != 0 and "positive integers" in res.output and "Traceback" not in res.output
