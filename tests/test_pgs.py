"""Patch-adaptive group sampling (baselines.pgs, docs/seed-systems.md §1.2 / §3): estimators, policies, patch grid, the
ResShift and DDIM families against plain samplers, report counts, an end-to-end run and the ``pgs`` command."""
import json
import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from qdm.diffusion import ResShiftDiffusion
from qdm.quadtree import quadtree_mask
from baselines.pgs import (
    DDIMFamily, GradientEstimator, GroupPolicy, PatchGrid, PatchGroupSampler, QuadtreeEstimator, RangeEstimator,
    ResidualEstimator, ResShiftFamily, blend_window, make_estimator, one_shot_coarse, respace,
    uniform_sample,
)
from qdm_bench.evaluate.pgs import family_for, peak_memory_hook
from qdm_bench.registry import create_model


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ------------------------------------------------------------------------------------------------- dummy backbones

class ConstantX0:
    """An x̂0-predicting dummy: always the nearest-upsampled LR condition (a fixed x0 for the whole chain)."""

    def __init__(self, sf: int = 4):
        self.sf, self.calls, self.batches = sf, 0, []

    def __call__(self, x, t, lq, mask=None):
        self.calls += 1
        self.batches.append(x.shape[0])
        assert mask is None and t.shape == (x.shape[0],) and bool((t == t[0]).all())
        return lq.repeat_interleave(self.sf, -2).repeat_interleave(self.sf, -1)


class EpsModel:
    """A deterministic ε-predicting dummy that insists on one timestep per batch (like BI-DiffSR)."""

    def __init__(self, sf: int = 4, t_max: int = 50):
        self.sf, self.t_max = sf, t_max

    def __call__(self, x, t, lq, mask=None):
        assert bool((t == t[0]).all()), "mixed timesteps in one batch"
        cond = F.interpolate(lq, size=x.shape[-2:], mode="bicubic", align_corners=False)
        return torch.tanh(x - 0.5 * cond) * (0.5 + t.view(-1, 1, 1, 1).float() / self.t_max)


def _lq(b=1, h=16, w=16, seed=0):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _mixed_lq(h=16, w=16):
    """Left half flat, right half noisy: a mixed-difficulty LR image in [-1, 1]."""
    lq = torch.full((1, 3, h, w), -0.2)
    lq[..., w // 2:] = _lq(1, h, w - w // 2, seed=1)
    return lq


def _policy(**kw):
    return GroupPolicy.default(**kw)


# ------------------------------------------------------------------------------------------------------ estimators

@pytest.mark.parametrize("name", ["range", "quadtree", "gradient"])
def test_estimators_shape_range_and_flat_image_is_easy(name):
    grid = PatchGrid(64, 48, 16, 8)
    est = make_estimator(name)
    d = est(_lq(2, 16, 12), grid, 4)
    assert d.shape == (2, *grid.shape) and bool(((d >= 0) & (d <= 1)).all())
    flat = torch.full((2, 3, 16, 12), 0.3)
    torch.testing.assert_close(est(flat, grid, 4), torch.ones(2, *grid.shape))  # bicubic: 1 up to rounding
    assert bool((_policy().assign(est(flat, grid, 4)) == 0).all())


def test_range_estimator_matches_per_patch_max_minus_min():
    lq = _lq(1, 16, 16)
    grid = PatchGrid(64, 64, 32, 16)  # LR patches of 8 at offsets 0, 4, 8
    d = RangeEstimator()(lq, grid, 4)
    for i, y in enumerate((0, 4, 8)):
        for j, x in enumerate((0, 4, 8)):
            block = lq[0, :, y:y + 8, x:x + 8].reshape(3, -1)
            r = (block.amax(1) - block.amin(1)).mean()
            assert math.isclose(float(d[0, i, j]), float(1 - r / 2), abs_tol=1e-6)


def test_quadtree_estimator_is_one_minus_qdm_mask_density_per_patch():
    lq = _mixed_lq(16, 16)
    lq[..., :8, :8] += 0.01 * _lq(1, 8, 8, seed=3)  # slightly textured corner: under and over s in places
    mask = quadtree_mask(lq, (8, 8), 0.15)  # Algorithm 1 with 2x2 LR blocks
    d = QuadtreeEstimator(0.15)(lq, PatchGrid(64, 64, 16, 0), 4)  # 4x4 LR patches = 2x2 mask bits
    density = mask.reshape(1, 4, 2, 4, 2).mean(dim=(2, 4))
    assert torch.allclose(d, 1 - density)


def test_gradient_and_residual_estimators():
    grid = PatchGrid(64, 64, 32, 0)
    lq = _mixed_lq()
    d = GradientEstimator()(lq, grid, 4)
    assert bool((d[0, :, 0] > d[0, :, 1]).all())  # the flat left column is easier
    y0 = F.interpolate(lq, size=(64, 64), mode="bicubic", align_corners=False)
    res = ResidualEstimator(scale=0.1)
    assert torch.equal(res(lq, grid, 4, coarse=y0), torch.ones(1, 2, 2))
    coarse = y0.clone()
    coarse[..., :32, :32] += 0.05
    assert torch.allclose(res(lq, grid, 4, coarse=coarse), torch.tensor([[[0.5, 1.0], [1.0, 1.0]]]))
    with pytest.raises(ValueError, match="coarse"):
        res(lq, grid, 4)
    with pytest.raises(ValueError, match="unknown difficulty estimator"):
        make_estimator("entropy")


# -------------------------------------------------------------------------------------------------------- policies

def test_default_policy_values_are_marked_assumed():
    pol = _policy()
    assert pol.table() == {0: (3, 2), 1: (8, 6), 2: (14, 15)}
    assert pol.thresholds == (0.9, 0.6) and pol.names == ("simple", "medium", "hard")
    assert len(pol.assumed) == 3 and all("[assumed]" in a for a in pol.assumed)
    ddim = _policy(schedule_len=2000, uniform_steps=50)
    assert ddim.t_start == (400, 1199, 1999) and ddim.n_steps == (2, 20, 50)
    given = _policy(t_start=(2, 7, 14), n_steps=(1, 4, 15), thresholds=(0.8, 0.5))
    assert given.assumed == ()


def test_threshold_and_quantile_assignment():
    d = torch.tensor([[[0.95, 0.9, 0.89, 0.6, 0.59, 0.0]]])
    assert _policy().assign(d).tolist() == [[[0, 0, 1, 1, 2, 2]]]
    pol = _policy(mode="quantiles", quantiles=(0.5, 0.3, 0.2))
    d = torch.rand(2, 2, 5, generator=torch.Generator().manual_seed(0))
    g = pol.assign(d)
    for b in range(2):
        assert torch.bincount(g[b].flatten(), minlength=3).tolist() == [5, 3, 2]
        easy, hard = d[b][g[b] == 0], d[b][g[b] == 2]
        assert float(easy.min()) >= float(d[b][g[b] == 1].max()) >= float(hard.max())
    flat = pol.assign(torch.ones(1, 1, 10))  # ties: stable, patch order
    assert flat.tolist() == [[[0] * 5 + [1] * 3 + [2] * 2]]


@pytest.mark.parametrize("kwargs, match", [
    (dict(thresholds=(0.5, 0.8)), "decrease strictly"),
    (dict(thresholds=(1.2, 0.5)), r"\[0, 1\]"),
    (dict(thresholds=(0.5,)), "need 2 thresholds"),
    (dict(mode="quantiles", quantiles=(0.5, 0.3, 0.3)), "summing to 1"),
    (dict(t_start=(8, 3, 14)), "increase strictly"),
    (dict(t_start=(3, 8, 14), n_steps=(2, 0, 15)), "at least 1 step"),
    (dict(t_start=(3, 8), n_steps=(2, 6, 15), thresholds=(0.5,)), "one step count per group"),
    (dict(mode="median"), "unknown policy"),
])
def test_policy_validation_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _policy(**kwargs)


def test_policy_schedule_checks():
    with pytest.raises(ValueError, match="give exactly one"):
        GroupPolicy(t_start=(3, 14), n_steps=(2, 15), thresholds=(0.5,), quantiles=(0.5, 0.5))
    with pytest.raises(ValueError, match="at most 4"):
        _policy(n_steps=(5, 6, 15)).check_schedule(15)
    with pytest.raises(ValueError, match="outside the schedule"):
        _policy(t_start=(3, 8, 20)).check_schedule(15)


# --------------------------------------------------------------------------------------------------------- respace

def test_respace_keeps_both_ends_and_distinct_indices():
    assert respace(14, 15) == list(range(14, -1, -1))
    assert respace(3, 2) == [3, 0] and respace(5, 1) == [5] and respace(8, 6) == [8, 6, 5, 3, 2, 0]
    for t in range(0, 30):
        for n in range(1, t + 2):
            ts = respace(t, n)
            assert len(ts) == n and ts[0] == t and (n == 1 or ts[-1] == 0)
            assert all(a > b for a, b in zip(ts, ts[1:]))
    with pytest.raises(ValueError, match="at most 4"):
        respace(3, 5)


# ------------------------------------------------------------------------------------------------------ patch grid

@pytest.mark.parametrize("h, w, p, o", [(64, 64, 16, 0), (64, 48, 16, 4), (60, 52, 20, 8), (37, 50, 16, 7),
                                        (32, 32, 32, 0), (40, 24, 24, 12)])
@pytest.mark.parametrize("window", ["hann", "linear"])
def test_patchify_unpatchify_round_trip(h, w, p, o, window):
    grid = PatchGrid(h, w, p, o)
    assert grid.rows[0] == 0 and grid.rows[-1] == h - p and grid.cols[-1] == w - p
    assert all(b - a <= grid.stride for a, b in zip(grid.rows, grid.rows[1:]))  # no gaps
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    patches = grid.patchify(x)
    assert patches.shape == (2 * grid.count, 3, p, p)
    torch.testing.assert_close(grid.unpatchify(patches, window), x, rtol=0, atol=1e-12)
    const = torch.full((1, 1, h, w), 0.7)
    torch.testing.assert_close(grid.unpatchify(grid.patchify(const), window), const, rtol=0, atol=1e-6)


def test_blend_windows_are_a_partition_of_unity_on_a_regular_grid():
    for kind in ("hann", "linear"):
        w = blend_window(16, 4, kind, torch.float64)
        assert bool((w > 0).all()) and torch.equal(w[4:12], torch.ones(8, dtype=torch.float64))
        torch.testing.assert_close(w[12:] + w[:4], torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="blending window"):
        blend_window(16, 4, "gauss")


def test_lr_patches_are_the_lr_regions_of_the_hr_patches():
    lq = _lq(1, 16, 12)
    hr = lq.repeat_interleave(4, -2).repeat_interleave(4, -1)
    grid = PatchGrid(64, 48, 32, 8)
    assert torch.equal(grid.patchify(hr)[..., ::4, ::4], grid.scaled(4).patchify(lq))


@pytest.mark.parametrize("kwargs, match", [
    (dict(height=64, width=64, patch=16, overlap=16), "smaller than the patch"),
    (dict(height=32, width=64, patch=48, overlap=0), "larger than the image"),
])
def test_grid_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PatchGrid(**kwargs)
    with pytest.raises(ValueError, match="multiples of the scale"):
        PatchGrid(64, 64, 18, 0).scaled(4)


def test_sampler_validates_patch_against_backbone_and_scale():
    model = create_model("qdm-t")
    with pytest.raises(ValueError, match="input multiple 16"):
        PatchGroupSampler(model, family_for(model), patch=24, overlap=0)
    with pytest.raises(ValueError, match="multiples of the scale"):
        PatchGroupSampler(ConstantX0(), ResShiftFamily(), patch=32, overlap=6)


# ------------------------------------------------------------------------------------------- ResShift family

def test_one_full_group_on_one_patch_equals_resshift_sample():
    """The key exactness check: t_start = T-1, N = T, one patch = the image → ResShiftDiffusion.sample bit for bit."""
    torch.manual_seed(0)
    model = create_model("qdm-t").eval()
    lq = _lq(2, 16, 16)
    pol = GroupPolicy(t_start=(14,), n_steps=(15,), quantiles=(1.0,))
    sampler = PatchGroupSampler(model, family_for(model), pol, "range", patch=64, overlap=0)
    out = sampler(lq, seed=7)
    with torch.no_grad():
        ref = ResShiftDiffusion().sample(model, lq, sf=4, seed=7).sr
    assert torch.equal(out.sr, ref)
    assert out.report.full_image_eq_nfe == 15 and out.report.model_calls == 15


def test_generalised_step_reduces_to_p_step_and_matches_the_formula():
    fam, diff = ResShiftFamily(), ResShiftDiffusion()
    x, x0 = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    for t in (1, 7, 14):
        ours = fam.step(x, x0, t, t - 1, torch.Generator().manual_seed(t))
        ref = diff.p_step(x, x0, torch.full((2,), t), generator=torch.Generator().manual_seed(t))
        assert torch.equal(ours, ref)
    eta = diff.schedule.etas
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    mean = (eta[3] / eta[11]) * x + (1 - eta[3] / eta[11]) * x0
    std = math.sqrt(2.0 ** 2 * float(eta[3] / eta[11] * (eta[11] - eta[3])))
    torch.testing.assert_close(fam.step(x, x0, 11, 3, torch.Generator().manual_seed(1)), mean + std * noise)
    assert torch.equal(fam.step(x, x0, 3, None), x0)


def test_shortcut_init_is_resshift_marginal_at_t_start():
    fam = ResShiftFamily()
    y0, x0 = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    noise = torch.randn(y0.shape, generator=torch.Generator().manual_seed(2))
    ref = ResShiftDiffusion().q_sample(x0, y0, torch.tensor([5]), noise=noise)
    torch.testing.assert_close(fam.init(x0, y0, 5, torch.Generator().manual_seed(2)), ref)


@pytest.mark.parametrize("overlap", [0, 8])
def test_respaced_groups_end_at_the_models_fixed_x0(overlap):
    lq = _mixed_lq()
    model = ConstantX0()
    sampler = PatchGroupSampler(model, ResShiftFamily(), _policy(), "gradient", patch=32, overlap=overlap,
                                patch_batch=3)
    out = sampler(lq, seed=0)
    target = lq.repeat_interleave(4, -2).repeat_interleave(4, -1)
    torch.testing.assert_close(out.sr, target, rtol=0, atol=1e-6)
    assert max(model.batches) <= 3 and model.calls == out.report.model_calls


def test_results_do_not_depend_on_the_patch_batch():
    lq = _lq(1, 16, 16)
    fam = ResShiftFamily()

    def model(x, t, lq, mask=None):
        return 0.5 * x + 0.1 * F.interpolate(lq, size=x.shape[-2:], mode="nearest")

    outs = [PatchGroupSampler(model, fam, _policy(mode="quantiles"), patch=16, overlap=0, patch_batch=b)(
        lq, seed=3).sr for b in (1, 5, 64)]
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])


# ------------------------------------------------------------------------------------------------- DDIM family

def _ddim(t_len=40, data_range=(0.0, 1.0)):
    return DDIMFamily(torch.linspace(1e-4, 0.05, t_len), uniform_steps=10, data_range=data_range)


def test_ddim_full_schedule_matches_a_plain_ddim_loop():
    t_len = 40
    fam, model = _ddim(t_len), EpsModel(t_max=t_len)
    lq = _lq(1, 8, 8)
    pol = GroupPolicy(t_start=(t_len - 1,), n_steps=(t_len,), quantiles=(1.0,))
    out = PatchGroupSampler(model, fam, pol, patch=32, overlap=0)(lq, seed=5)

    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.05, t_len, dtype=torch.float64), 0).float()
    y0 = (F.interpolate(lq, size=(32, 32), mode="bicubic", align_corners=False) + 1) / 2  # to [0, 1]
    g = torch.Generator().manual_seed(5)
    x = abar[-1].sqrt() * y0 + (1 - abar[-1]).sqrt() * torch.randn(y0.shape, generator=g)
    for t in range(t_len - 1, -1, -1):
        eps = model(x, torch.tensor([t]), lq)
        x0 = (x - (1 - abar[t]).sqrt() * eps) / abar[t].sqrt()
        x = abar[t - 1].sqrt() * x0 + (1 - abar[t - 1]).sqrt() * eps if t > 0 else x0
    torch.testing.assert_close(out.sr, (x * 2 - 1).clamp(-1, 1))


def test_ddim_respaced_groups_reach_the_implied_x0():
    fam = _ddim(60, data_range=(-1.0, 1.0))
    lq = _mixed_lq()
    target = lq.repeat_interleave(4, -2).repeat_interleave(4, -1).clamp(-0.9, 0.9)

    def model(x, t, lq_p, mask=None):  # the ε that makes x̂0 the nearest-upsampled LR at every step
        a = fam.alphas_cumprod[int(t[0])].float()
        x0 = lq_p.repeat_interleave(4, -2).repeat_interleave(4, -1).clamp(-0.9, 0.9)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    pol = _policy(schedule_len=60, uniform_steps=10)
    out = PatchGroupSampler(model, fam, pol, patch=16, overlap=8)(lq, seed=0)
    torch.testing.assert_close(out.sr, target, rtol=0, atol=1e-5)
    sr, info = uniform_sample(model, lq, fam, sf=4, seed=0)
    torch.testing.assert_close(sr, target, rtol=0, atol=1e-5)
    assert info["nfe"] == 10


def test_family_for_picks_resshift_or_ddim():
    model = create_model("qdm-t")
    assert isinstance(family_for(model), ResShiftFamily)
    diffusion = types.SimpleNamespace(betas=torch.linspace(1e-6, 1e-2, 2000), data_range=(0.0, 1.0), num_steps=50)
    fam = family_for(EpsModel(), diffusion=diffusion)
    assert isinstance(fam, DDIMFamily) and fam.schedule_len == 2000 and fam.uniform_steps == 50
    assert fam.data_range == (0.0, 1.0) and torch.equal(fam.to_model(torch.tensor([-1.0, 1.0])), torch.tensor([0., 1.]))
    with pytest.raises(ValueError, match="unknown diffusion|no adapter"):
        family_for(info=types.SimpleNamespace(name="x", diffusion="flow", num_steps=10))
    with pytest.raises(ValueError, match="no adapter"):
        family_for(diffusion=object())


def test_bi_diffsr_plugs_into_the_ddim_family():
    pytest.importorskip("baselines.bi_diffsr")
    torch.manual_seed(0)
    model = create_model("bi-diffsr").eval()
    fam = family_for(model)
    assert isinstance(fam, DDIMFamily) and fam.schedule_len == 2000 and fam.uniform_steps == 50
    assert fam.data_range == (0.0, 1.0)
    pol = GroupPolicy.default(fam.schedule_len, fam.uniform_steps, n_steps=(1, 2, 3))
    assert pol.t_start == (400, 1199, 1999)
    out = PatchGroupSampler(model, fam, pol, "gradient", patch=16, overlap=0, patch_batch=2)(
        _mixed_lq(8, 8), seed=0)  # BI-DiffSR itself refuses a mixed-t batch
    assert out.sr.shape == (1, 3, 32, 32) and bool(out.sr.isfinite().all())
    assert out.report.uniform_nfe == 50 and out.report.patches == 4


def test_dual_domain_full_group_equals_its_sampler_with_the_resshift_posterior():
    dd = pytest.importorskip("baselines.dualdomain")
    torch.manual_seed(0)
    model = create_model("dualdomain-resshift").eval()
    fam = family_for(model)
    assert isinstance(fam, ResShiftFamily) and fam.residual and fam.name == "dualdomain"
    lq = _lq(1, 8, 8)
    pol = GroupPolicy(t_start=(14,), n_steps=(15,), quantiles=(1.0,))
    out = PatchGroupSampler(model, fam, pol, patch=32, overlap=0)(lq, seed=4)
    with torch.no_grad():
        ref = dd.DualDomainDiffusion().sample(model, lq, sf=4, seed=4, posterior="resshift").sr
    torch.testing.assert_close(out.sr, ref)


# ------------------------------------------------------------------------------------------------------- report

def test_report_counts_by_hand():
    lq = _lq(1, 16, 16)
    model = ConstantX0()
    pol = GroupPolicy(t_start=(3, 8, 14), n_steps=(2, 6, 15), quantiles=(0.5, 0.25, 0.25))
    rep = PatchGroupSampler(model, ResShiftFamily(), pol, patch=16, overlap=0, patch_batch=3)(
        lq, seed=0).report
    assert [g.patches for g in rep.groups] == [8, 4, 4] and rep.patches == 16
    assert rep.patch_evals == 8 * 2 + 4 * 6 + 4 * 15 == 100
    assert rep.full_image_eq_nfe == pytest.approx(100 / 16) == rep.pixel_eq_nfe
    assert rep.model_calls == 3 * 2 + 2 * 6 + 2 * 15 == model.calls
    assert (rep.uniform_nfe, rep.uniform_model_calls, rep.overhead_passes) == (15, 15, 0)
    assert [g.timesteps for g in rep.groups] == [[3, 0], [8, 6, 5, 3, 2, 0], list(range(14, -1, -1))]

    rep = PatchGroupSampler(ConstantX0(), ResShiftFamily(), pol, patch=32, overlap=16, patch_batch=4)(
        lq, seed=0).report
    assert rep.grid == (3, 3) and rep.coverage == pytest.approx(9 * 32 ** 2 / 64 ** 2)
    assert rep.pixel_eq_nfe == pytest.approx(rep.coverage * rep.full_image_eq_nfe)
    json.dumps(rep.to_dict())


def test_mixed_image_needs_fewer_evaluations_than_uniform():
    rep = PatchGroupSampler(ConstantX0(), ResShiftFamily(), _policy(), "range", patch=16, overlap=0)(
        _mixed_lq(), seed=0, measure=peak_memory_hook("cpu")).report
    sizes = [g.patches for g in rep.groups]
    assert sizes[0] == 8 and sizes[2] > 0  # the flat half is simple, the noisy half is not
    assert rep.full_image_eq_nfe < rep.uniform_nfe and rep.pixel_eq_nfe < rep.uniform_nfe
    assert rep.peak_memory_bytes is not None and rep.memory_method and rep.wall_time_s > 0


# ------------------------------------------------------------------------------------------------- end to end

def test_end_to_end_qdm_t_on_a_phantom():
    from qdm_bench.data.images import degrade, image_by_name, lr_condition

    torch.manual_seed(0)
    model = create_model("qdm-t").eval()
    lq = lr_condition(degrade(image_by_name("ct:ct_phantom_0", size=64).hr[None], 4))
    out = PatchGroupSampler(model, family_for(model), patch=16, overlap=0, estimator="quadtree")(lq, seed=0)
    rep = out.report
    assert out.sr.shape == (1, 3, 64, 64) and bool(out.sr.isfinite().all()) and float(out.sr.abs().max()) <= 1
    assert out.group_map.shape == (1, 4, 4) and sum(g.patches for g in rep.groups) == 16
    assert rep.full_image_eq_nfe < 15 and rep.patch_evals < 15 * 16
    coarse = one_shot_coarse(model, lq, family_for(model))
    assert coarse.shape == (1, 3, 64, 64)


# --------------------------------------------------------------------------------------------------------- CLI

def _cli(*args):
    from qdm_bench.cli.main import main

    return CliRunner().invoke(main, ["pgs", *args])


def test_cli_runs_and_appends_a_json_line(tmp_path):
    out = tmp_path / "pgs.jsonl"
    r = _cli("-m", "qdm-t", "--image-size", "64", "--patch", "16", "--overlap", "0", "--estimator", "residual",
             "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "full-image-eq NFE" in r.output and "uniform 15-step" in r.output and "random weights" in r.output
    row = json.loads(out.read_text().splitlines()[-1])
    assert row["model"] == "qdm-t" and row["overhead_passes"] == 1 and row["uniform"]["nfe"] == 15
    assert sum(g["patches"] for g in row["groups"]) == row["patches"] == 16
    assert any("[assumed]" in a for a in row["assumptions"])
    from qdm_bench.report import write_report  # PGS rows get their own report table

    index = write_report([out], tmp_path / "report")
    table = (tmp_path / "report" / "pgs.md").read_text()
    assert "pgs.md" in index.read_text() and "full-image-eq NFE" in table and "qdm-t" in table


@pytest.mark.parametrize("args, match", [
    (("--gammas", "0.5,0.8"), "decrease strictly"),
    (("--patch-size", "24"), "input multiple 16"),
    (("--gammas", "0.9,0.5", "--quantiles", "0.5,0.3,0.2"), "not both"),
    (("--group-steps", "2,6,16"), "cannot take 16 steps"),
    (("--estimator", "range", "--estimator-param", "0.1"), "no parameter"),
])
def test_cli_errors_are_one_line(args, match):
    r = _cli("-m", "qdm-t", "--image-size", "64", *args)
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert match in r.output


def test_cli_with_checkpoint_reports_psnr(tmp_path, monkeypatch):
    from qdm_bench.evaluate.train import FORMAT

    try:
        import qdm_bench.evaluate.quality  # noqa: F401
    except ImportError:  # written concurrently: a stand-in with the agreed signature psnr_y(sr, hr) -> (B,)
        def psnr_y(sr, hr):
            w = torch.tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1) / 255
            mse = (((sr - hr) * w).sum(1) ** 2).flatten(1).mean(1)
            return 10 * torch.log10(1 / mse.clamp_min(1e-10))

        monkeypatch.setitem(sys.modules, "qdm_bench.evaluate.quality", types.SimpleNamespace(psnr_y=psnr_y))
    torch.manual_seed(0)
    ckpt = tmp_path / "qdm-t.pt"
    torch.save({"format": FORMAT, "model": "qdm-t", "overrides": {},
                "state_dict": create_model("qdm-t").state_dict()}, ckpt)
    out = tmp_path / "pgs.jsonl"
    r = _cli("--ckpt", str(ckpt), "--image-size", "64", "--patch", "32", "--overlap", "16", "--quantiles",
             "0.5,0.3,0.2", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "PSNR-Y vs HR" in r.output and "PSNR-Y bicubic" in r.output and "random weights" not in r.output
    psnr = json.loads(out.read_text())["psnr_y"]
    assert all(isinstance(psnr[k], float) and math.isfinite(psnr[k]) for k in ("pgs", "uniform", "bicubic"))
