"""The metric-convention switch: MATLAB-compatible bicubic against a brute-force loop over MATLAB's formula and
closed-form facts, uint8 scoring against closed-form PSNRs, and --metric-convention through the CLI and the cells."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from qdm_bench.cli.main import main
from qdm_bench.data.images import degrade, lr_condition
from qdm_bench.data.matlab_resize import imresize, uint8_grid
from qdm_bench.errors import ConfigError, ImageError
from qdm_bench.evaluate import metrics as m

BT601 = (65.481, 128.553, 24.966)  # Y = 16 + 65.481·R + 128.553·G + 24.966·B, RGB in [0, 1]


# -- the oracle: MATLAB's imresize bicubic, one output pixel at a time ---------------------------------------------

def _keys(t: float) -> float:
    """Keys' cubic kernel, a = -0.5."""
    a = abs(t)
    if a <= 1:
        return 1.5 * a ** 3 - 2.5 * a ** 2 + 1
    if a <= 2:
        return -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2
    return 0.0


def _mirror(i: int, n: int) -> int:
    """MATLAB's symmetric padding of a 1-based index (the edge repeated: 0 -> 1, -1 -> 2, n + 1 -> n)."""
    while i < 1 or i > n:
        i = 1 - i if i < 1 else 2 * n + 1 - i
    return i


def _oracle_1d(values: list[float], scale: float, out_len: int) -> list[float]:
    """imresize of one line: coordinate map, stretched kernel when downscaling, mirrored indices, normalised."""
    n = len(values)
    if scale < 1:
        def h(t):
            return scale * _keys(scale * t)
        width = 4.0 / scale
    else:
        h, width = _keys, 4.0
    out = []
    for u in range(1, out_len + 1):
        x = u / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(x - width / 2)
        idx = [left + k for k in range(math.ceil(width) + 2)]
        w = [h(x - i) for i in idx]
        total = sum(w)
        out.append(sum(wi / total * values[_mirror(i, n) - 1] for i, wi in zip(idx, w)))
    return out


def _oracle(img: torch.Tensor, scale: float, out_h: int, out_w: int) -> torch.Tensor:
    """imresize of (..., H, W): every column along the height first, then every row along the width."""
    flat = img.reshape(-1, *img.shape[-2:]).tolist()
    result = []
    for plane in flat:
        cols = [_oracle_1d([row[j] for row in plane], scale, out_h) for j in range(len(plane[0]))]
        tall = [[cols[j][i] for j in range(len(cols))] for i in range(out_h)]
        result.append([_oracle_1d(row, scale, out_w) for row in tall])
    return torch.tensor(result, dtype=torch.float64).reshape(*img.shape[:-2], out_h, out_w)


@pytest.mark.parametrize("s, shape", [(2, (3, 12, 12)), (3, (3, 12, 12)), (4, (3, 12, 12)), (4, (2, 3, 8, 16)),
                                      (3, (1, 9, 6))])
def test_downscale_matches_the_matlab_formula(s, shape):
    g = torch.Generator().manual_seed(s)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    got = imresize(x, 1 / s)
    want = _oracle(x, 1 / s, shape[-2] // s, shape[-1] // s)
    assert got.shape == want.shape and got.dtype == torch.float64
    assert torch.allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("s", [2, 3, 4])
def test_upscale_matches_the_matlab_formula(s):
    g = torch.Generator().manual_seed(10 + s)
    x = torch.rand(3, 5, 7, generator=g, dtype=torch.float64)
    got = imresize(x, s)
    assert got.shape == (3, 5 * s, 7 * s)
    assert torch.allclose(got, _oracle(x, s, 5 * s, 7 * s), rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 4])
def test_a_constant_image_stays_constant(scale):
    x = torch.full((1, 3, 12, 12), 0.37, dtype=torch.float64)
    assert torch.allclose(imresize(x, scale), torch.full_like(imresize(x, scale), 0.37), rtol=0, atol=1e-14)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3])
def test_a_linear_ramp_stays_a_ramp_in_the_interior(scale):
    """Ramp x[i] = i (1-based): the output at u is the coordinate u / scale + 0.5 (1 - 1 / scale) wherever the
    kernel's support (half width 2 / scale when downscaling, 2 upscaling) lies inside the image. Downscaling by an
    integer puts the samples symmetrically about that coordinate; Keys' kernel reproduces linear functions."""
    n = 24
    ramp = torch.arange(1, n + 1, dtype=torch.float64)
    half = 2 / scale if scale < 1 else 2
    out_len = round(n * scale)
    for dim in (-1, -2):  # a ramp along the width, then along the height
        x = ramp.expand(6, n).clone() if dim == -1 else ramp[:, None].expand(n, 6).clone()
        y = imresize(x, scale)
        line = y[0] if dim == -1 else y[:, 0]
        coords = [u / scale + 0.5 * (1 - 1 / scale) for u in range(1, out_len + 1)]
        inside = [k for k, c in enumerate(coords) if c - half >= 1 and c + half <= n]
        assert len(inside) >= 2
        for k in inside:
            assert float(line[k]) == pytest.approx(coords[k], abs=1e-12)
    # A 4x4-block-constant image downscaled by 4 does NOT give its block values: the stretched kernel reaches 8
    # input pixels to each side (support |x| < 2 / scale), i.e. into the neighbouring blocks. Not asserted.


def test_matlab_bicubic_differs_from_torch_at_the_borders_only():
    """Same kernel (a = -0.5, stretched) and coordinates as torch's antialiased bicubic, but symmetric padding
    instead of a truncated, renormalised kernel: equal in the interior, different on the two border LR pixels."""
    g = torch.Generator().manual_seed(7)
    x = torch.rand(1, 3, 48, 48, generator=g, dtype=torch.float64)
    for s in (2, 4):
        ours = imresize(x, 1 / s)
        theirs = F.interpolate(x, size=(48 // s, 48 // s), mode="bicubic", antialias=True, align_corners=False)
        assert (ours - theirs).abs().max() > 1e-3  # the switch matters
        assert torch.allclose(ours[..., 2:-2, 2:-2], theirs[..., 2:-2, 2:-2], rtol=0, atol=1e-12)
    up = imresize(x[..., :12, :12], 4)
    torch_up = F.interpolate(x[..., :12, :12], scale_factor=4, mode="bicubic", align_corners=False)
    assert (up - torch_up)[..., 8:-8, 8:-8].abs().max() > 1e-3  # torch upsamples with a = -0.75


def test_degrade_kernels():
    g = torch.Generator().manual_seed(3)
    hr = torch.rand(1, 3, 32, 32, generator=g)
    torch_lr = F.interpolate(hr, size=(8, 8), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    assert torch.equal(degrade(hr, 4), torch_lr)  # the default is unchanged
    assert torch.equal(degrade(hr, 4, kernel="torch"), torch_lr)
    lr = degrade(hr, 4, kernel="matlab")
    assert torch.equal(lr, uint8_grid(imresize(uint8_grid(hr), 1 / 4)))
    levels = lr.double() * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4) and lr.min() >= 0 and lr.max() <= 1
    assert lr.dtype == hr.dtype and degrade(hr[0], 4, kernel="matlab").shape == (3, 8, 8)
    with pytest.raises(ImageError, match="unknown kernel"):
        degrade(hr, 4, kernel="lanczos")


def test_uint8_grid_rounds_half_up_and_clips():
    x = torch.tensor([-0.1, 0.0, 0.5 / 255, 0.49 / 255, 1.5 / 255, 254.6 / 255, 1.2], dtype=torch.float64)
    assert (uint8_grid(x) * 255).round().tolist() == [0, 0, 1, 0, 2, 255, 255]


# -- uint8 scoring ---------------------------------------------------------------------------------------------------

def _levels(shape, lo: int, hi: int, seed: int) -> torch.Tensor:
    """Random uint8 levels in [lo, hi] / 255, float64."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi + 1, shape, generator=g).double() / 255


def _gray(v: torch.Tensor) -> torch.Tensor:
    return v.expand(-1, 3, -1, -1).clone()


def test_sub_half_level_errors_vanish_in_the_published_convention():
    """SR = HR + δ with |δ| < 0.5/255, HR on the uint8 grid: published PSNR is inf (identical after rounding), float
    PSNR is 10·log10(255² / MSE_Y) with the Y error from the BT.601 coefficients."""
    hr = _levels((2, 3, 16, 16), 1, 254, 0)
    g = torch.Generator().manual_seed(1)
    delta = (torch.rand(hr.shape, generator=g, dtype=torch.float64) * 0.98 - 0.49) / 255
    sr = hr + delta
    crop = 2
    for conv_psnr in (m.psnr_y(sr, hr, crop, "published"), m.psnr_rgb(sr, hr, crop, "published")):
        assert all(math.isinf(float(v)) for v in conv_psnr)
    assert torch.allclose(m.ssim_y(sr, hr, crop, "published"), torch.ones(2, dtype=torch.float64))
    dy = sum(c * delta[:, k] for k, c in enumerate(BT601))[:, crop:-crop, crop:-crop]
    expected = [10 * math.log10(255.0 ** 2 / float((d ** 2).mean())) for d in dy]
    assert m.psnr_y(sr, hr, crop).tolist() == pytest.approx(expected, abs=1e-9)
    values, _ = m.score(sr, hr, crop=crop, metrics=("psnr", "ssim", "psnr_rgb"), convention="published")
    assert all(math.isinf(v) for v in values["psnr"] + values["psnr_rgb"]) and values["ssim"] == [1.0, 1.0]
    assert m.score(sr, hr, crop=crop, metrics=("psnr",))[0]["psnr"] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("k", [1, 3])
def test_a_whole_level_offset_reads_the_same_in_both_conventions(k):
    """Grey SR = HR + k/255 on the uint8 grid: Y = 16 + (65.481 + 128.553 + 24.966)·v = 16 + 219·v, so Y is off by
    219·k/255 everywhere and PSNR = 10·log10(255² / (219·k/255)²) in both conventions."""
    hr = _gray(_levels((2, 1, 16, 16), 0, 255 - k, k))
    sr = hr + k / 255
    expected = 10 * math.log10(255.0 ** 2 / (sum(BT601) * k / 255) ** 2)
    for convention in ("float", "published"):
        assert m.psnr_y(sr, hr, 4, convention).tolist() == pytest.approx([expected] * 2, abs=1e-9)


def test_fractional_errors_round_to_a_level_pattern():
    """Grey SR off by 0.3/255 on half the pixels (a checkerboard) and 0.7/255 on the rest: published rounds the
    errors to 0 and 1 level, so MSE_Y = ½·(219/255)²; float sees ½·(0.3² + 0.7²)·(219/255)²."""
    hr = _gray(_levels((1, 1, 16, 16), 0, 254, 5))
    ii, jj = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    delta = torch.where((ii + jj) % 2 == 0, torch.tensor(0.3, dtype=torch.float64),
                        torch.tensor(0.7, dtype=torch.float64)) / 255
    sr = hr + delta
    y_level = sum(BT601) / 255  # one RGB level on a grey image, in Y
    published = 10 * math.log10(255.0 ** 2 / (0.5 * y_level ** 2))
    floating = 10 * math.log10(255.0 ** 2 / (0.5 * (0.3 ** 2 + 0.7 ** 2) * y_level ** 2))
    assert float(m.psnr_y(sr, hr, 4, "published")) == pytest.approx(published, abs=1e-9)
    assert float(m.psnr_y(sr, hr, 4)) == pytest.approx(floating, abs=1e-9)


def test_unknown_convention_is_refused():
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="metric convention"):
        m.score(x, x, metrics=("psnr",), convention="matlab")


# -- cells and the CLI -----------------------------------------------------------------------------------------------

def test_cell_key_drops_the_default_and_round_trips():
    from qdm_bench.cli import options
    from qdm_bench.measure.cell import METRIC_CONVENTIONS, Cell
    from qdm_bench.measure.validate import validate_cell

    assert options.METRIC_CONVENTIONS == METRIC_CONVENTIONS
    base = Cell.create("qdm-t", 64, 64, metrics=("params",))
    assert "metric_convention" not in base.key
    assert Cell.create("qdm-t", 64, 64, metrics=("params",), metric_convention="float").key == base.key
    pub = Cell.create("qdm-t", 64, 64, metrics=("params",), metric_convention="published")
    assert '"metric_convention": "published"' in pub.key and pub.input.lr_kernel == "matlab"
    assert Cell.from_flat(pub.flat()) == pub and "published" in pub.label()
    with pytest.raises(ConfigError, match="metric convention"):
        validate_cell(Cell.create("qdm-t", 64, 64, metrics=("params",), metric_convention="uint8"), check_model=False)


def test_latent_sr_key_keeps_the_float_keys():
    import hashlib

    from qdm_bench.evaluate.latent_sr import SRJob, sr_key

    job = SRJob("medx4-l", "a/q.ckpt", "b/ae.ckpt", "imgs", from_hr=True)
    old = "|".join(map(str, ("medx4-l", "q.ckpt", "ae.ckpt", "x.png", 0.1, 0, True, 4, None, ())))
    assert sr_key(job, "x.png", 0.1) == hashlib.sha1(old.encode()).hexdigest()[:16]
    pub = SRJob("medx4-l", "a/q.ckpt", "b/ae.ckpt", "imgs", from_hr=True, metric_convention="published")
    assert sr_key(pub, "x.png", 0.1) != sr_key(job, "x.png", 0.1)


@pytest.fixture(scope="module")
def residual_ckpt(tmp_path_factory):
    """A residual qdm-t 'trained' with lr 0 (as in test_quality): it predicts exactly y0, the bicubic of its LR."""
    from qdm_bench.evaluate.train import TrainConfig, train

    cfg = TrainConfig(model="qdm-t", images="phantoms", image_size=64, holdout=1, crop=32, batch=2, steps=1, lr=0.0,
                      prediction="residual", threads=1)
    return train(cfg, tmp_path_factory.mktemp("conv"), resume=False)


def test_quality_published_rows(residual_ckpt, tmp_path, one_thread):
    """The published row is its own cell, records its convention, and scores what the convention prescribes: SR =
    y0 (torch bicubic of the MATLAB LR), floor = MATLAB upsampling of that LR, both rounded to uint8 with HR."""
    from qdm_bench.data.images import image_by_name

    out = tmp_path / "q.jsonl"
    args = ["quality", "--ckpt", str(residual_ckpt), "--samplers", "deterministic", "--tile", "0", "-o", str(out),
            "--device", "cpu"]
    runner = CliRunner()
    for convention in ("float", "published"):
        res = runner.invoke(main, args + ["--metric-convention", convention])
        assert res.exit_code == 0, res.output
    rows = {r["metric_convention"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"float", "published"} and rows["float"]["key"] != rows["published"]["key"]
    assert "metric_convention" not in rows["float"]["key"]
    assert all(r["status"] == "ok" for r in rows.values())

    hr = image_by_name("phantoms:ct_phantom_noisy", size=64, multiple=4).hr[None].float()
    lr = degrade(hr, 4, kernel="matlab")
    y0 = ((F.interpolate(lr_condition(lr), size=(64, 64), mode="bicubic", align_corners=False) + 1) / 2).clamp(0, 1)
    pub = rows["published"]
    assert pub["psnr"] == pytest.approx(float(m.psnr_y(y0, hr, 4, "published")), abs=1e-9)
    assert pub["bicubic_psnr"] == pytest.approx(float(m.psnr_y(imresize(lr, 4).clamp(0, 1), hr, 4, "published")),
                                                abs=1e-9)
    assert rows["float"]["psnr"] == pytest.approx(rows["float"]["bicubic_psnr"], abs=1e-9)
    assert pub["psnr"] != rows["float"]["psnr"]

    before = out.read_text()  # a bad value is refused by click before any work (one line, exit 1: cli/main.py)
    res = runner.invoke(main, args + ["--metric-convention", "matlab"])
    assert res.exit_code == 1 and "Invalid value for '--metric-convention'" in res.output
    assert "Traceback" not in res.output and out.read_text() == before
    bad = tmp_path / "never.jsonl"
    res = runner.invoke(main, ["quality", "--ckpt", str(residual_ckpt), "-o", str(bad), "--metric-convention", "x"])
    assert res.exit_code == 1 and not bad.exists()


def test_other_commands_take_the_same_switch(tmp_path):
    runner = CliRunner()
    for cmd in (["ablate", "threshold"], ["pgs"], ["sr", "-p", "medx4-l", "--ckpt", "a", "--first-stage", "b",
                                                 "-i", "c"]):
        res = runner.invoke(main, cmd + ["--metric-convention", "uint8", "-o", str(tmp_path / "x.jsonl")])
        assert res.exit_code == 1 and "'float', 'published'" in res.output, cmd
        assert "--metric-convention" in runner.invoke(main, cmd[:2] + ["--help"] if cmd[0] == "ablate"
                                                      else cmd[:1] + ["--help"]).output
    assert not (tmp_path / "x.jsonl").exists()
    for cmd in (["ablate", "threshold", "-m", "qdm-t"], ["pgs", "-m", "qdm-t"]):  # nothing scored without --ckpt
        res = runner.invoke(main, cmd + ["--metric-convention", "published"])
        assert res.exit_code != 0 and "--ckpt" in res.output and "Traceback" not in res.output
