"""The shared sampling skeleton (qdm.sampling) and the process step functions patch-adaptive group sampling calls."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import qdm.diffusion
from baselines.bi_diffsr_ddpm import BIDiffSRDiffusion, ddim_jump, ddim_shortcut
from baselines.pgs import DDIMFamily, GroupPolicy, PatchGroupSampler, ResShiftFamily, family_of, uniform_sample
from qdm.diffusion import ResShiftDiffusion, eta_schedule
from qdm.sampling import (
    ChainOutput, SampleResult, bicubic_y0, check_sr_input, mask_free_result, ones_masks, resolve_generator, run_chain,
)


# ------------------------------------------------------------------------------------------------------ run_chain
def _toy_step(generator):
    """A toy reverse step: x ← 0.9·x + 0.1·t + noise, prediction x / 2 (draws randomness like a real sampler)."""
    def step(t, x):
        pred = x / 2
        return 0.9 * x + 0.1 * t + 0.01 * torch.randn(x.shape, generator=generator), pred
    return step


@pytest.mark.parametrize("progress", [False, True])
def test_run_chain_is_the_hand_written_loop(progress):
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    steps = range(9, -1, -1)
    out = run_chain(_toy_step(torch.Generator().manual_seed(1)), x_T, steps, progress=progress,
                    return_trajectory=True)
    step = _toy_step(torch.Generator().manual_seed(1))
    x, trajectory, predictions = x_T, [x_T], []
    for t in steps:
        x, pred = step(t, x)
        trajectory.append(x)
        predictions.append(pred)
    assert isinstance(out, ChainOutput) and torch.equal(out.x, x)
    assert len(out.trajectory) == 11 and all(torch.equal(a, b) for a, b in zip(out.trajectory, trajectory))
    assert len(out.predictions) == 10 and all(torch.equal(a, b) for a, b in zip(out.predictions, predictions))
    plain = run_chain(_toy_step(torch.Generator().manual_seed(1)), x_T, iter(steps))  # any iterable, no lists
    assert torch.equal(plain.x, x) and plain.trajectory is None and plain.predictions is None


def test_helpers_and_re_exports():
    assert qdm.diffusion.SampleResult is SampleResult and qdm.diffusion.check_sr_input is check_sr_input
    assert qdm.diffusion.resolve_generator is resolve_generator
    lq = torch.rand(2, 3, 4, 5) * 2 - 1
    assert torch.equal(bicubic_y0(lq, 4), F.interpolate(lq, size=(16, 20), mode="bicubic", align_corners=False))
    same = bicubic_y0(lq, 1)
    assert torch.equal(same, lq) and same.data_ptr() != lq.data_ptr()
    assert torch.equal(bicubic_y0(lq, size=(8, 10)), bicubic_y0(lq, 2))
    dm, mm = ones_masks(2, (16, 20), lq, down_patch=2)
    assert dm.shape == (2, 1, 16, 20) and mm.shape == (2, 8, 10) and bool((dm == 1).all() and (mm == 1).all())
    res = mask_free_result(lq, lq)
    assert res.model_mask.shape == (2, 4, 5) and torch.equal(res.density, torch.ones(2))
    assert res.diffusion_density is not res.density and res.trajectory is None
    with pytest.raises(ValueError, match="positive integer"):
        check_sr_input(lq, 0)


# ------------------------------------------------------------------------------------------- process step functions
@pytest.mark.parametrize("kappa", [2.0, 0.8])
def test_resshift_shortcut_start_is_the_marginal(kappa):
    d = ResShiftDiffusion(eta_schedule(kappa=kappa))
    x0, y0 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    got = d.shortcut_start(x0, y0, 6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, d.shortcut_start(x0, y0, 6, noise))
    torch.testing.assert_close(got, d.q_sample(x0, y0, torch.full((2,), 6), noise=noise))  # up to κ√η rounding
    assert torch.equal(ResShiftFamily(d).init(x0, y0, 6, torch.Generator().manual_seed(3)), got)


def test_ddim_family_calls_the_process_and_matches_the_generic_functions():
    proc = BIDiffSRDiffusion()
    fam = family_of(proc)
    assert isinstance(fam, DDIMFamily) and fam.process is proc and fam.sampler is proc
    generic = DDIMFamily(proc.betas, uniform_steps=50, data_range=(0.0, 1.0), clip_range=proc.clip_range)
    assert generic.process is None
    x, eps = torch.rand(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    for t, s in ((1999, 1199), (400, 0), (40, None)):
        assert torch.equal(fam.step(x, eps, t, s), generic.step(x, eps, t, s))
        assert torch.equal(fam.step(x, eps, t, s), ddim_jump(proc.alphas_cumprod, x, eps, t, s, proc.clip_range))
    a = fam.init(x, x, 1199, torch.Generator().manual_seed(0))
    assert torch.equal(a, generic.init(x, x, 1199, torch.Generator().manual_seed(0)))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, ddim_shortcut(proc.alphas_cumprod, x, 1199, noise))
    with pytest.raises(ValueError, match="s < t"):
        proc.reverse_step(x, eps, 10, 20)
    with pytest.raises(ValueError, match="same ᾱ"):
        DDIMFamily(torch.linspace(1e-4, 0.02, 2000), process=proc)


# --------------------------------------------------------------------------------------------- PGS stands alone
def _model(x, t, lq, mask=None):
    return 0.5 * x + 0.1 * F.interpolate(lq, size=x.shape[-2:], mode="nearest")


def test_pgs_needs_a_family_and_accepts_a_process():
    with pytest.raises(ValueError, match="needs a family"):
        PatchGroupSampler(_model, patch=16, overlap=0)
    with pytest.raises(ValueError, match="needs a family"):
        uniform_sample(_model, torch.zeros(1, 3, 4, 4))
    lq = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pol = GroupPolicy.default(15, 15, mode="quantiles")
    by_family = PatchGroupSampler(_model, ResShiftFamily(), pol, patch=16, overlap=0)(lq, seed=2)
    by_process = PatchGroupSampler(_model, ResShiftDiffusion(), pol, patch=16, overlap=0)(lq, seed=2)
    assert torch.equal(by_family.sr, by_process.sr)
    rep = by_family.report
    assert rep.peak_memory_bytes is None and rep.memory_method is None and rep.wall_time_s > 0
    hooked = PatchGroupSampler(_model, ResShiftFamily(), pol, patch=16, overlap=0, multiple=8)(
        lq, seed=2, measure=lambda work: (work(), 123, "fake"))
    assert torch.equal(hooked.sr, by_family.sr)
    assert (hooked.report.peak_memory_bytes, hooked.report.memory_method) == (123, "fake")
    with pytest.raises(ValueError, match="input multiple 32"):
        PatchGroupSampler(_model, ResShiftFamily(), pol, patch=16, overlap=0, multiple=32)


def test_model_packages_do_not_import_the_harness():
    code = ("import sys, qdm.diffusion, qdm.sampling, baselines.pgs, baselines.bi_diffsr_ddpm, baselines.dualdomain; "
            "bad = [m for m in sys.modules if m.split('.')[0] == 'qdm_' + 'bench']; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
