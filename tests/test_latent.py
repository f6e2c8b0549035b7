"""The latent SR pipeline (qdm.latent) and ``qdm-bench sr`` with the authors' tiny checkpoints (fixtures)."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from qdm.diffusion import ResShiftDiffusion, eta_schedule
from qdm.latent import PRESETS, LatentSR, TileStats, gaussian_weight, preset, tile_starts
from qdm_bench.cli.main import main
from qdm_bench.registry import create_model

pytest.importorskip("diffusers")
FIX = Path(__file__).parent / "fixtures" / "reference"
TINY = ["-m", "qdm-t", "--model-option", "dim=64", "--model-option", "depth=2", "--model-option", "heads=2"]


@pytest.mark.parametrize("length,chop,stride", [(128, 128, 112), (129, 128, 112), (300, 128, 112), (64, 128, 112),
                                                 (200, 64, 48)])
def test_tiles_cover_the_image_with_the_last_flush_to_the_end(length, chop, stride):
    starts = tile_starts(length, chop, stride)
    covered = set()
    for s in starts:
        covered |= set(range(s, min(s + chop, length)))
    assert covered == set(range(length)) and starts[0] == 0
    if length > chop:
        assert starts[-1] == length - chop and all(b - a <= stride for a, b in zip(starts, starts[1:]))


def test_the_blending_weight_is_opencvs_default_gaussian():
    k = 16
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8  # cv2.getGaussianKernel(k, 0)
    g = [math.exp(-((i - (k - 1) / 2) ** 2) / (2 * sigma ** 2)) for i in range(k)]
    g = torch.tensor(g) / sum(g)
    assert torch.allclose(gaussian_weight(k), torch.outer(g, g).float(), atol=1e-7)


class _Identity(torch.nn.Module):
    """A first stage that is the identity (latent = image), so the pipeline must reduce to the pixel sampler."""

    kind, downsample_factor = "vq", 1

    def encode(self, y, sample=False, generator=None):
        return y

    def decode(self, z, quantize=True):
        return z


def _tiny_qdm():
    torch.manual_seed(0)
    model = create_model("qdm-t", dim=32, depth=1, heads=2)
    for p in model.parameters():  # the zero-initialised adaLN / final layers would make every output 0
        p.data.normal_(0, 0.05)
    return model.eval()


def test_with_an_identity_first_stage_the_pipeline_is_the_pixel_sampler():
    model = _tiny_qdm()
    p = preset("medx4-l", chop_size=8, chop_stride=6, scale_factor=1.0)
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        ours = LatentSR(model, _Identity(), p)(lr, seed=3)
        pixel = ResShiftDiffusion(eta_schedule(), posterior="reference").sample(
            model, lr, sf=4, threshold=p.threshold, mode="reference", seed=3).sr
    assert (ours - pixel).abs().max() < 1e-5


def test_tiling_is_exact_for_a_translation_equivariant_tile_operator(monkeypatch):
    p = preset("medx4-l", chop_size=16, chop_stride=12)
    pipe = LatentSR(_tiny_qdm(), _Identity(), p, tile_batch=3)
    monkeypatch.setattr(pipe, "sample_tiles", lambda x, g, stats=None: F.interpolate(x, scale_factor=4))
    lr = torch.rand(1, 3, 40, 28) * 2 - 1
    out = pipe(lr, seed=0)
    assert torch.allclose(out, F.interpolate(lr, scale_factor=4), atol=1e-6)


def test_every_preset_takes_its_values_from_the_authors_configs():
    assert set(PRESETS) == {f"realsr-x4-{s}" for s in "sbl"} | {f"medx4-{s}" for s in "sbl"} | {"medx8-b", "medx8-l"}
    for name, p in PRESETS.items():
        assert p.steps == 15 and p.kappa == 2.0 and p.chunk_size == 64 and p.model == "qdm-" + name[-1]
        if name.startswith("realsr"):
            assert (p.first_stage, p.sf, p.scale_factor, p.threshold, p.chop_size) == ("vq", 4, 1.0, 0.0, 128)
        else:
            assert (p.first_stage, p.scale_factor, p.threshold) == ("kl", 0.1, 0.15)
            assert (p.sf, p.chop_size) == ((4, 128) if name.startswith("medx4") else (8, 64))


def _sr(tmp_path, *extra):
    args = ["sr", "-p", "medx4-l", "--ckpt", str(FIX / "qdm_tiny.ckpt"), "--first-stage", str(FIX / "vae_kl_tiny.ckpt"),
            "-i", "phantoms", "--from-hr", "--limit", "1", *TINY, "-o", str(tmp_path / "sr.jsonl"), *extra]
    return CliRunner().invoke(main, args)


def test_sr_with_the_authors_checkpoints_writes_images_rows_and_costs(tmp_path):
    from qdm_bench.measure.macs import count_macs

    res = _sr(tmp_path, "--out-dir", str(tmp_path / "out"), "--thresholds", "0,0.15")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (tmp_path / "sr.jsonl").read_text().splitlines()]
    assert [r["threshold"] for r in rows] == [0.0, 0.15]
    full, sparse = rows
    assert Path(full["sr_path"]).is_file() and full["psnr"] is not None and full["ssim"] is not None
    assert full["macs"] == full["macs_encoder"] + full["macs_denoiser"] + full["macs_decoder"]
    # a 256² phantom: LR 64², padded to the 128² tile; latent 128² (f = 4 of the 512² y); s = 0 gives a full mask
    dense = count_macs("qdm-t", 128, 1, dim=64, depth=2, heads=2).macs
    assert full["patch_density"] == 1.0 and full["macs_denoiser"] == 15 * dense
    assert sparse["patch_density"] < 1 and sparse["macs_denoiser"] < full["macs_denoiser"]
    assert sparse["macs_encoder"] == full["macs_encoder"] and full["peak_mem_bytes"] > 0
    files = {k: torch.load(FIX / f, weights_only=True) for k, f in (("qdm", "qdm_tiny.ckpt"), ("kl", "vae_kl_tiny.ckpt"))}
    stored = {k: sum(v.numel() for n, v in f["state_dict"].items() if not n.endswith("pos_embed"))
              for k, f in files.items()}  # every learnable tensor of the authors' files, none of their frozen tables
    assert full["params_denoiser"] == stored["qdm"] and full["params_first_stage"] == stored["kl"]
    again = _sr(tmp_path, "--thresholds", "0,0.15")  # resumes: nothing is measured twice
    assert again.exit_code == 0 and "kept from" in again.output
    assert len((tmp_path / "sr.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("args,needle", [
    (["-p", "medx5-l"], "--preset 'medx5-l' is unknown"),
    (["--first-stage", "nope.ckpt"], "--first-stage nope.ckpt is not a file"),
    (["-p", "realsr-x4-l"], "needs the VQ-f4"),
    (["--thresholds", "2"], "--thresholds: 2.0 is outside [0, 1]"),
])
def test_bad_sr_input_is_one_line_before_any_work(tmp_path, args, needle):
    base = {"-p": "medx4-l", "--first-stage": str(FIX / "vae_kl_tiny.ckpt")}
    base.update(dict(zip(args[::2], args[1::2])))
    cli = ["sr", "--ckpt", str(FIX / "qdm_tiny.ckpt"), "-i", "phantoms", "--from-hr", *TINY,
           "-o", str(tmp_path / "sr.jsonl")] + [x for kv in base.items() for x in kv]
    res = CliRunner().invoke(main, cli)
    assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    assert not (tmp_path / "sr.jsonl").exists() or not (tmp_path / "sr.jsonl").read_text()


def test_the_wrong_qdm_size_is_one_line_naming_the_key(tmp_path):
    res = CliRunner().invoke(main, ["sr", "-p", "medx4-s", "--ckpt", str(FIX / "qdm_tiny.ckpt"), "--first-stage",
                                    str(FIX / "vae_kl_tiny.ckpt"), "-i", "phantoms", "--from-hr",
                                    "-o", str(tmp_path / "sr.jsonl")])
    assert res.exit_code != 0 and "upstream.x_embedder.proj.weight is (64, 6, 8, 8)" in res.output
    assert "(384, 6, 8, 8)" in res.output and len(res.output.strip().splitlines()) <= 2


@pytest.mark.parametrize("cmd", [["quality"], ["ablate", "threshold", "--thresholds", "0.15"]])
def test_quality_and_ablate_threshold_take_the_authors_checkpoints_with_a_preset(tmp_path, cmd):
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(main, [*cmd, "--preset", "medx4-l", "--ckpt", str(FIX / "qdm_tiny.ckpt"),
                                    "--first-stage", str(FIX / "vae_kl_tiny.ckpt"), "-i", "phantoms", "--limit", "1",
                                    "-m", "qdm-t", "--model-option", "dim=64", "-o", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text().splitlines()[0])
    assert row["command"] == "sr" and row["psnr"] is not None and row["threshold"] == (0.0 if cmd == ["quality"]
                                                                                       else 0.15)


@pytest.mark.parametrize("name,files,options", [
    ("kl-f4", ("vae_kl_tiny.ckpt", "vae_kl_tiny.io.pt"), dict(ch=32, num_res_blocks=1)),
    ("vq-f4", ("vq_f4_tiny.pth", "vq_f4_tiny.io.pt"), dict(ch=32, num_res_blocks=1, n_embed=64)),
])
def test_the_first_stages_are_registered_models_loading_the_authors_files(name, files, options):
    """create_model + --ckpt take the authors' LDM files; forward is the round trip decode(encode(x))."""
    io = torch.load(FIX / files[1], weights_only=True)
    model = create_model(name, checkpoint_path=str(FIX / files[0]), **options).double().eval()
    with torch.no_grad():
        out = model(io["inputs"]["image"], None, None)
    assert (out - io["outputs"]["decoded"]).abs().max() < 1e-10


def test_first_stage_costs_are_measured_like_any_model(tmp_path):
    res = CliRunner().invoke(main, ["macs", "-m", "kl-f4,vq-f4", "--res", "64", "-o", str(tmp_path / "m.jsonl")])
    assert res.exit_code == 0, res.output
    rows = {r["model"]: r for r in map(json.loads, (tmp_path / "m.jsonl").read_text().splitlines())}
    assert rows["kl-f4"]["params"] == 55_312_063 and rows["vq-f4"]["params"] == 55_322_782  # test_first_stage's hand counts
    assert rows["kl-f4"]["macs"] > 0 and rows["kl-f4"]["attention_macs"] > 0
    bad = CliRunner().invoke(main, ["train", "-m", "kl-f4", "--steps", "1", "--run-dir", str(tmp_path / "r")])
    assert bad.exit_code != 0 and "not a denoiser" in bad.output and not (tmp_path / "r").exists()
