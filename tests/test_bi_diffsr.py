"""BI-DiffSR baseline (spec: docs/seed-systems.md §4): counts, binarisation, gradients, adapter, cost, DDIM."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import baselines.bi_diffsr as bd
from baselines.bi_diffsr_ddpm import BIDiffSRDiffusion, ddim_timesteps
from qdm.diffusion import SampleResult
from qdm_bench.measure.macs import count_macs
from qdm_bench.registry import ModelError, create_model, example_inputs, resolve

# Published / re-derived numbers of docs/seed-systems.md §4.3–§4.5 (the oracle).
FP_EQUIV, BINARY, FP, TAR, TAA, DEPLOY = 51_280_387, 48_211_968, 3_068_419, 86_720, 260_160, 4_575_043


def on_meta(**overrides) -> bd.BIDiffSRUNet:
    with torch.device("meta"):
        return bd.BIDiffSRUNet(**{**bd.BI_DIFFSR_CFG, **overrides})


@pytest.fixture(scope="module")
def model() -> bd.BIDiffSRUNet:
    torch.manual_seed(0)
    return create_model("bi-diffsr").eval()


# ------------------------------------------------------------------------------------------- counts and census
def test_parameter_counts_match_the_released_model():
    counts = on_meta().param_counts()
    assert counts == {"params_fp_equiv": FP_EQUIV, "binary_params": BINARY, "fp_params": FP, "tar_params": TAR,
                      "taa_params": TAA, "paper": DEPLOY}
    assert BINARY / 32 + FP == DEPLOY
    cost = on_meta().cost_extras(256, 256)
    assert cost["params_deploy"] == DEPLOY and cost["params_fp_equiv"] == FP_EQUIV
    assert round(cost["params_deploy"] / 1e6, 2) == 4.58  # published "Params 4.58 M"


def test_module_census():
    m = on_meta()

    def n_bin(module: nn.Module) -> int:
        return sum(type(x) is bd.BinaryConv2d for x in module.modules())

    assert n_bin(m) == 56
    assert sum(type(x) is nn.Conv2d for x in m.modules()) == 28
    assert sum(isinstance(x, nn.GroupNorm) for x in m.modules()) == 46
    assert sum(isinstance(x, nn.Linear) for x in m.modules()) == 24
    assert sum(isinstance(x, bd.SelfAttention) for x in m.modules()) == 1
    enc_res = sum(n_bin(b) for b in m.encoder if isinstance(b, bd.ResBlock))
    cp_down = sum(n_bin(b) for b in m.encoder if isinstance(b, bd.CPDown))
    cp_up = sum(n_bin(b) for b in m.decoder if isinstance(b, bd.CPUp))
    dec = sum(n_bin(b) for b in m.decoder if not isinstance(b, bd.CPUp))
    assert (enc_res, cp_down, n_bin(m.middle), dec, cp_up) == (16, 6, 4, 24, 6)
    # fp_res: the full- and half-resolution decoder levels hold only plain convs (12 fusion + 12 ResBlock convs)
    fp_levels = [b for b in m.decoder if not isinstance(b, bd.CPUp) and level_of(b) in (0, 1)]
    assert len(fp_levels) == 12 and all(n_bin(b) == 0 for b in fp_levels)
    assert sum(sum(type(x) is nn.Conv2d for x in b.modules()) for b in fp_levels) == 24


def level_of(block: nn.Module) -> int:
    return next(c.level for c in block.modules() if isinstance(c, nn.Conv2d))


@pytest.mark.parametrize("overrides, deploy, paper", [
    (dict(K=1), 4_297_539, 4.30),  # "none" / K = 1 rows of the TaR/TaA and K ablations
    (dict(K=2), 4_366_915, 4.37),
    (dict(taa=False), 4_366_915, 4.37),  # TaR only
    (dict(tar=False), 4_505_667, 4.51),  # TaA only
])
def test_ablation_parameter_counts(overrides, deploy, paper):
    cost = on_meta(**overrides).cost_extras(256, 256)
    assert cost["params_deploy"] == deploy and round(deploy / 1e6, 2) == paper
    assert cost["binary_params"] == BINARY and cost["bops"] == on_meta().cost_extras(256, 256)["bops"]


def test_fp_counterpart_and_variants():
    with torch.device("meta"):
        m = create_model("bi-diffsr-fp")
    cost = m.cost_extras(256, 256)
    assert cost["binary_params"] == 0 and cost["bops"] == 0 and cost["params_deploy"] == FP_EQUIV
    assert cost["fp_macs"] == on_meta().cost_extras(256, 256)["macs_simulated"]
    everything = on_meta(fp_res=()).cost_extras(256, 256)  # all decoder levels binarised
    assert everything["bops"] > cost["fp_macs"] * 0.9 and everything["params_deploy"] < DEPLOY
    concat = on_meta(fusion="concat")
    assert sum(type(x) is bd.BinaryConv2d for x in concat.modules()) == 56 - 6
    assert concat.param_counts()["binary_params"] == BINARY  # 2c² either way
    assert on_meta(fusion="split").param_counts() == on_meta().param_counts()
    # the fusion ablation (K = 1): Concat 4.29 M, Split 4.30 M, CS-Fusion 4.30 M
    assert [round(on_meta(K=1, fusion=f).cost_extras(8, 8)["params_deploy"] / 1e6, 2)
            for f in ("concat", "split", "cs")] == [4.29, 4.30, 4.30]
    with pytest.raises(ValueError, match="binary_mode"):
        on_meta(binary_mode="xnor")
    with pytest.raises(ValueError, match="fusion"):
        on_meta(fusion="add")


# ------------------------------------------------------------------------------------------- cost
def test_cost_anchors_at_256():
    cost = on_meta().cost_extras(256, 256)
    assert cost["bops"] == 98_650_030_080 and round(cost["bops"] / 1e9, 2) == 98.65
    assert round(cost["fp_macs"] / 1e9, 2) == 34.70
    assert round(cost["fp_conv_macs"] / 1e9, 2) == 33.63
    assert cost["attention_conv_macs"] == cost["attention_macs"] == 2 ** 30  # qkv/out 1.07 G; QKᵀ + AV 1.07 G
    assert cost["linear_macs"] < 1e6
    assert round(cost["macs_simulated"] / 1e9, 2) == 133.35
    assert round(cost["ops"] / 1e9, 2) == 36.24 and cost["ops"] == cost["fp_macs"] + cost["bops"] / 64
    assert abs(cost["ops"] / 36.67e9 - 1) < 0.013  # docs/seed-systems.md §4.4: 1.2 % gap to the published 36.67 G


def test_count_macs_sees_the_float_simulated_network():
    mc = count_macs("bi-diffsr", 256)
    cost = on_meta().cost_extras(256, 256)
    assert mc.macs == cost["macs_simulated"] == 133_349_912_576
    assert mc.attention_macs == cost["attention_macs"] and mc.attention_calls == 1
    assert mc.num_steps == 50 and mc.macs_per_sr == 50 * mc.macs
    fp_macs = mc.macs - cost["bops"]
    assert fp_macs == cost["fp_macs"] and round((fp_macs + cost["bops"] / 64) / 1e9, 2) == 36.24
    assert count_macs("bi-diffsr", (64, 96), batch=2).macs == on_meta().cost_extras(64, 96, batch=2)["macs_simulated"]


def test_cost_scaling_and_1024():
    m = on_meta()
    c256, c1024 = m.cost_extras(256, 256), m.cost_extras(1024, 1024)
    hw = 1024 * 1024
    assert c1024["bops"] == 16 * c256["bops"] and abs(c1024["bops"] / hw / 1.5053e6 - 1) < 1e-3
    assert c1024["attention_macs"] == hw ** 2 // 4  # (HW)²/4
    assert round(c1024["attention_macs"] / 1e9) == 275 and round(c1024["ops"] / 1e9) == 838
    assert abs((c1024["ops"] - c1024["attention_macs"]) / hw / 0.5366e6 - 1) < 1e-3
    assert m.cost_extras(250, 250) == m.cost_extras(256, 256)  # the adapter pads to a multiple of 8


# ------------------------------------------------------------------------------------------- binarisation
def test_approx_sign_forward_and_surrogate_gradient():
    x = torch.tensor([-1.5, -1.0, -0.75, -0.5, 0.0, 0.25, 0.5, 0.99, 1.0, 2.0], dtype=torch.float64,
                     requires_grad=True)
    y = bd.ApproxSign.apply(x)
    assert y.tolist() == [-1, -1, -1, -1, 0, 1, 1, 1, 1, 1]  # sign(0) = 0 (torch convention, kept)
    y.sum().backward()
    expected = [0.0, 0.0, 2 + 2 * -0.75, 2 + 2 * -0.5, 2.0, 2 - 2 * 0.25, 2 - 2 * 0.5, 2 - 2 * 0.99, 0.0, 0.0]
    assert torch.allclose(x.grad, torch.tensor(expected, dtype=torch.float64))
    # matches the derivative of the piecewise quadratic (finite differences inside each piece)
    pts = torch.tensor([-0.8, -0.3, 0.2, 0.7], dtype=torch.float64)
    quad = lambda v: torch.where(v < 0, v * v + 2 * v, -v * v + 2 * v)  # noqa: E731
    fd = (quad(pts + 1e-6) - quad(pts - 1e-6)) / 2e-6
    p = pts.clone().requires_grad_(True)
    bd.ApproxSign.apply(p).sum().backward()
    assert torch.allclose(p.grad, fd, atol=1e-6)


def test_binary_weight_values_and_straight_through_gradient():
    torch.manual_seed(1)
    conv = bd.BinaryConv2d(4, 3, 3)
    with torch.no_grad():
        conv.weight.normal_(0, 0.8)
        conv.weight[0, 0, 0, 0] = 1.5
        conv.weight[1, 2, 1, 1] = -3.0
    w = conv.weight
    wb = conv.effective_weight()
    alpha = w.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.equal(wb.abs(), alpha.expand_as(w)) and torch.equal(torch.sign(wb), torch.sign(w.detach()))
    x = torch.sign(torch.randn(2, 4, 5, 5))
    g = torch.randn(2, 3, 5, 5)
    (conv(x) * g).sum().backward()
    # reference: gradient w.r.t. the binarised weight, passed through where |W| ≤ 1 (α gets none)
    wb_leaf = wb.detach().requires_grad_(True)
    (F.conv2d(x, wb_leaf, padding=1) * g).sum().backward()
    inside = w.detach().abs() <= 1
    assert torch.allclose(w.grad, wb_leaf.grad * inside)
    assert w.grad[0, 0, 0, 0] == 0 and w.grad[1, 2, 1, 1] == 0 and (w.grad[inside] != 0).all()
    fp = bd.BinaryConv2d(4, 3, 3, binary=False)
    assert fp.effective_weight() is fp.weight


def test_timestep_groups():
    t = torch.tensor([0, 399, 400, 1599, 1600, 1960, 1999, 2500, -3])
    assert [int(bd.timestep_group(v[None])) for v in t] == [0, 0, 1, 3, 4, 4, 4, 4, 0]
    groups = [int(bd.timestep_group(torch.tensor([s]))) for s in ddim_timesteps(50)]
    assert groups == [g for g in range(4, -1, -1) for _ in range(10)]  # 10 DDIM steps per group
    assert int(bd.timestep_group(torch.tensor([1999]), groups=1)) == 0
    with torch.device("meta"):
        assert bd.timestep_group(torch.zeros(3, dtype=torch.long)).shape == (1,)


# ------------------------------------------------------------------------------------------- adapter
def test_registry_entry_and_resolution_check():
    info = resolve("bi-diffsr")
    assert (info.space, info.multiple, info.uses_mask, info.num_steps, info.diffusion, info.t_max, info.uniform_t) \
        == ("pixel", 8, False, 50, "bi-diffsr", 2000, True)
    with torch.device("meta"):  # the factory holds the configuration; the registry entry only names it
        assert create_model("bi-diffsr-fp").config["binary_mode"] == "fp"
    with pytest.raises(ModelError, match="multiples of 8"):
        info.check_resolution(36, 36)
    with pytest.raises(ModelError, match="multiples of 8"):
        example_inputs("bi-diffsr", 30)
    ex = example_inputs("bi-diffsr", 32, batch=3)
    assert ex["t"].unique().numel() == 1 and 0 <= int(ex["t"][0]) < 2000


def test_forward_binarised_values_padding_and_shape(model):
    """Every binarised conv sees ±1 (0 only at exact zeros) inputs and uses ±α_o weights; 20×20 is padded to 24."""
    seen = []

    def hook(mod, inputs, output):
        w = mod.effective_weight()
        alpha = mod.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
        # ±α_o, or 0 where a latent weight is exactly 0 (torch.sign; uniform init in float32 does hit 0.0)
        seen.append((set(inputs[0].unique().tolist()) <= {-1.0, 0.0, 1.0},
                     torch.equal(w.abs(), alpha * (mod.weight != 0)), inputs[0].shape[-1]))

    handles = [m.register_forward_hook(hook) for m in model.modules() if type(m) is bd.BinaryConv2d]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 20, 20, generator=g)
    lq = torch.rand(2, 3, 5, 5, generator=g) * 2 - 1
    try:
        with torch.no_grad():
            eps = model(x, torch.full((2,), 1234), lq, mask=torch.ones(2, 10, 10))
    finally:
        for h in handles:
            h.remove()
    assert eps.shape == (2, 3, 20, 20) and eps.dtype == x.dtype and torch.isfinite(eps).all()
    assert len(seen) == 56 and all(a and b for a, b, _ in seen)
    assert {size for *_, size in seen} == {24, 12, 6, 3}  # padded 20 → 24, then 12, 6, 3


def test_adapter_condition_matches_native_input(model):
    """forward(x_t, t, lq) == denoise(concat((bicubic(lq) + 1)/2, x_t), t); lq may be given at HR size."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 16, 16, generator=g)
    lq = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1
    t = torch.tensor([300])
    up = F.interpolate(lq, size=(16, 16), mode="bicubic", align_corners=False)
    with torch.no_grad(), bd.frozen_binary_weights(model):
        a = model(x, t, lq)
        b = model(x, t, up)
        c = model.denoise(torch.cat([(up + 1) / 2, x], dim=1), t)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_mixed_timesteps_are_refused(model):
    x = torch.zeros(2, 3, 16, 16)
    with pytest.raises(ValueError, match="one timestep for the whole batch"):
        model(x, torch.tensor([10, 1500]), x)
    with pytest.raises(ValueError, match="larger than x_t"):
        model(x[:, :, :8, :8], torch.tensor([10, 10]), x)


def test_training_loss_backward_reaches_latent_weights_tar_and_taa(model):
    """One shared t from the generator, L1 on ε, and gradients on latent weights, TaR and TaA of the selected group."""
    diff = BIDiffSRDiffusion()
    calls = []

    def spy(x_t, t, lq, mask=None):
        calls.append((x_t.detach().clone(), t.clone(), lq))
        return model(x_t, t, lq, mask=mask)

    g = torch.Generator().manual_seed(5)
    x0 = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    lq = torch.rand(2, 3, 4, 4, generator=g) * 2 - 1
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        out = diff.training_loss(spy, x0, None, lq, generator=torch.Generator().manual_seed(7))
        out["loss"].backward()
    finally:
        model.eval()
    x_t, t, _ = calls[0]
    assert t.shape == (2,) and t[0] == t[1]
    gen = torch.Generator().manual_seed(7)
    t_ref = torch.randint(0, 2000, (1,), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    assert t[0] == t_ref[0]
    ab = diff.alphas_cumprod[t_ref].float()
    assert torch.allclose(x_t, ab.sqrt() * (x0 + 1) / 2 + (1 - ab).sqrt() * noise, atol=1e-6)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    k = int(bd.timestep_group(t))
    blocks = [m for m in model.modules() if isinstance(m, bd.BIConv)]
    for blk in (blocks[0], blocks[len(blocks) // 2], blocks[-1]):
        assert blk.conv.weight.grad is not None and blk.conv.weight.grad.abs().sum() > 0
        for table in (blk.tar, blk.taa_bias0, blk.taa_slope, blk.taa_bias1):
            rows = table.grad.abs().sum(dim=1)
            assert rows[k] > 0 and rows.sum() == rows[k]  # only the selected timestep group learns
    assert model.stem.weight.grad.abs().sum() > 0 and model.head.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------------------- diffusion
def test_ddim_schedule_and_step_math():
    assert ddim_timesteps(50)[:3] == [1960, 1920, 1880] and ddim_timesteps(50)[-1] == 0
    assert len(ddim_timesteps(50)) == 50 and ddim_timesteps(3) == [1332, 666, 0]
    diff = BIDiffSRDiffusion()
    assert diff.num_steps == 50
    betas = torch.linspace(1e-6, 1e-2, 2000, dtype=torch.float64)
    assert torch.allclose(diff.alphas_cumprod, torch.cumprod(1 - betas, 0))
    # reference DDIM (η = 0, clip to [-1, 1], final ᾱ = 1) with a stub ε-model, in float64
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1

    def stub(x, t, y0, mask=None):
        assert y0.shape[-2:] == x.shape[-2:] and t.unique().numel() == 1
        return 0.3 * x - 0.1 * y0 + t.double()[:, None, None, None] / 4000

    res = diff.sample(stub, lq, sf=2, seed=11, steps=4)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    y0 = F.interpolate(lq, size=(8, 8), mode="bicubic", align_corners=False)
    ac = torch.cumprod(1 - betas, 0)
    for t in (1500, 1000, 500, 0):
        eps = stub(x, torch.tensor([t]), y0)
        a, a_prev = ac[t], (ac[t - 500] if t >= 500 else torch.tensor(1.0, dtype=torch.float64))
        x0 = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    assert torch.allclose(res.sr, (2 * x - 1).clamp(-1, 1))
    assert isinstance(res, SampleResult) and torch.equal(res.y0, y0)
    assert res.diffusion_mask.shape == (1, 1, 8, 8) and res.diffusion_mask.all() and res.model_mask.all()
    assert res.density.tolist() == [1.0] and res.diffusion_density.tolist() == [1.0]
    data_clip = BIDiffSRDiffusion(clip_range=(0.0, 1.0)).sample(stub, lq, sf=2, seed=11, steps=4)
    assert data_clip.sr.shape == res.sr.shape
    with pytest.raises(ValueError, match="seed or generator"):
        diff.sample(stub, lq, seed=1, generator=torch.Generator())


def test_ddim_sampler_is_deterministic_with_a_seed(model):
    diff = BIDiffSRDiffusion()
    lq = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        a = diff.sample(model, lq, sf=4, seed=123, steps=3)
        b = diff.sample(model, lq, sf=4, seed=123, steps=3)
    assert a.sr.shape == (1, 3, 32, 32) and torch.equal(a.sr, b.sr)
    assert a.sr.min() >= -1 and a.sr.max() <= 1 and torch.isfinite(a.sr).all()
    assert all(m.frozen_weight is None for m in model.modules() if isinstance(m, bd.BinaryConv2d))
    assert math.isclose(float(a.density[0]), 1.0)


def test_measured_row_reports_bops_ops_and_deployed_params():
    """The harness row of a MAC cell carries the binary accounting (docs/seed-systems.md §4.4 anchors at 256²)."""
    from qdm_bench.measure.cell import Cell
    from qdm_bench.measure.core import measure_cell

    row = measure_cell(Cell.create(model="bi-diffsr", height=256, width=256, metrics=("params", "macs")))
    assert row["params_deploy"] == 4_575_043 and row["params"] == 51_280_387
    assert row["bops"] == 98_650_030_080
    assert row["ops"] == pytest.approx((row["macs"] - row["bops"]) + row["bops"] / 64)
    assert row["ops"] / 1e9 == pytest.approx(36.24, abs=0.01)
    assert "simulated in floating point" in row["message"]


def test_models_listing_shows_the_deployed_count_as_the_paper_convention():
    from qdm_bench.measure.params import count_parameters

    with torch.device("meta"):
        counts = count_parameters(create_model("bi-diffsr"))
        fp = count_parameters(create_model("bi-diffsr-fp"))
    assert counts["learnable"] == 51_280_387 and counts["paper"] == 4_575_043
    assert fp["paper"] in (None, 51_280_387)


def test_batched_timing_cell_gives_the_batch_one_timestep():
    """The harness's real-run inputs respect uniform_t (BI-DiffSR refuses mixed timesteps) and t_max."""
    from qdm_bench.measure.cell import Cell
    from qdm_bench.measure.inputs import random_inputs

    x, t, lq = random_inputs(Cell.create(model="bi-diffsr", height=32, width=32, batch=4), "cpu")
    assert t.shape == (4,) and len(set(t.tolist())) == 1 and 0 <= int(t[0]) < 2000
    with torch.no_grad():
        assert create_model("bi-diffsr").eval()(x, t, lq).shape == x.shape
