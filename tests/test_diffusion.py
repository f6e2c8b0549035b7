"""Tests for qdm.diffusion: schedule (docs/qdm.md §3.2), forward/reverse steps (§3.3–3.6), losses (§3.9), sampler (§3.10)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qdm.diffusion import EtaSchedule, ResShiftDiffusion, SampleResult, eta_schedule

T = 15
KAPPA = 2.0

# Spec §3.2 table: i, √η, η, α, clipped posterior variance, coef1, coef2, input std.
SPEC_TABLE = [
    (0, 0.02, 0.0004, 0.0004, 0.001553, 0.0, 1.0, 1.0008),
    (1, 0.117165, 0.013728, 0.013328, 0.001553, 0.029138, 0.970862, 1.027088),
    (2, 0.176305, 0.031083, 0.017356, 0.030660, 0.441641, 0.558359, 1.060346),
    (3, 0.233629, 0.054582, 0.023499, 0.053529, 0.569474, 0.430526, 1.103780),
    (4, 0.291574, 0.085015, 0.030433, 0.078156, 0.642030, 0.357970, 1.157610),
    (5, 0.351009, 0.123208, 0.038192, 0.105413, 0.690019, 0.309981, 1.221814),
    (6, 0.412356, 0.170038, 0.046830, 0.135730, 0.724590, 0.275410, 1.296206),
    (7, 0.475858, 0.226441, 0.056403, 0.169415, 0.750915, 0.249085, 1.380494),
    (8, 0.541672, 0.293408, 0.066968, 0.206732, 0.771760, 0.228240, 1.474325),
    (9, 0.609910, 0.371990, 0.078582, 0.247927, 0.788753, 0.211247, 1.577327),
    (10, 0.680658, 0.463295, 0.091305, 0.293244, 0.802922, 0.197078, 1.689136),
    (11, 0.753985, 0.568494, 0.105198, 0.342927, 0.814952, 0.185048, 1.809413),
    (12, 0.829951, 0.688818, 0.120324, 0.397223, 0.825318, 0.174682, 1.937853),
    (13, 0.908606, 0.825566, 0.136747, 0.456386, 0.834359, 0.165641, 2.074190),
    (14, 0.990000, 0.980100, 0.154534, 0.520675, 0.842328, 0.157672, 2.218197),
]


# ---------------------------------------------------------------------------------------------------- oracles / toys
def oracle_etas(i: int) -> tuple[float, float]:
    """(η_i, η_{i-1}) from the closed form of docs/qdm.md §3.2, independent of the module."""
    def eta(j: int) -> float:
        return (0.02 * (0.99 / 0.02) ** ((j / (T - 1)) ** 0.3)) ** 2
    return eta(i), (eta(i - 1) if i > 0 else 0.0)


def plain_resshift_step(x_t, x0_hat, i, noise):
    """Plain ResShift posterior (no mask): mean (η_prev/η)x_t + (α/η)x̂0, std √(κ²·η_prev/η·α), no noise at i = 0."""
    eta, eta_prev = oracle_etas(i)
    alpha = eta - eta_prev
    mean = (eta_prev / eta) * x_t + (alpha / eta) * x0_hat
    std = math.sqrt(KAPPA ** 2 * eta_prev / eta * alpha) if i > 0 else 0.0
    return mean + std * noise


class ToyNet(nn.Module):
    """Tiny conv net predicting x0 from (x, lq); ignores the mask. Deterministic weights."""

    def __init__(self, channels: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=g) * 0.1)
        self.calls: list[dict] = []

    def forward(self, x, t, lq, mask=None):
        self.calls.append({"t": t.clone(), "mask": mask})
        lq_up = F.interpolate(lq, size=x.shape[-2:], mode="nearest")
        return torch.tanh(self.conv(x) + lq_up) + 0.01 * t.to(x.dtype).view(-1, 1, 1, 1)


class WindowToyNet(ToyNet):
    down_patch = 2
    window = 2


class UpstreamOracle(nn.Module):
    """Returns (x0 + a, x0 + b) — an oracle for the downstream and upstream predictions, offset by constants."""

    def __init__(self, x0, a=0.0, b=0.0):
        super().__init__()
        self.x0, self.a, self.b = x0, a, b
        self.seen: list[tuple] = []

    def forward(self, x, t, lq, mask=None, return_upstream=False):
        self.seen.append((x.clone(), t.clone(), mask, return_upstream))
        pred = self.x0 + self.a
        return (pred, self.x0 + self.b) if return_upstream else pred


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(123)
    x0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    y0 = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    lq = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).to(torch.float64)
    mask[0, 0, 0, 0], mask[0, 0, 0, 1] = 1.0, 0.0  # both kinds present
    return x0, y0, lq, mask


# ---------------------------------------------------------------------------------------------------- schedule
def test_schedule_matches_spec_table():
    s = eta_schedule()
    assert isinstance(s, EtaSchedule) and s.steps == T == len(s) and s.kappa == KAPPA
    cols = [s.sqrt_etas, s.etas, s.alphas, s.posterior_variance, s.coef1, s.coef2, s.input_std]
    for c in cols + [s.etas_prev]:
        assert c.dtype == torch.float64 and c.shape == (T,)
    expected = torch.tensor([row[1:] for row in SPEC_TABLE], dtype=torch.float64)
    got = torch.stack(cols, dim=1)
    assert torch.allclose(got, expected, rtol=0, atol=6e-7), (got - expected).abs().max()


def test_schedule_internal_relations():
    s = eta_schedule()
    assert s.etas_prev[0] == 0 and torch.equal(s.etas_prev[1:], s.etas[:-1])
    assert torch.allclose(s.alphas, s.etas - s.etas_prev)
    raw = KAPPA ** 2 * s.etas_prev / s.etas * s.alphas
    assert raw[0] == 0 and torch.equal(s.posterior_variance[1:], raw[1:])
    assert s.posterior_variance[0] == s.posterior_variance[1]  # clipped: entry 0 copied from entry 1
    assert s.sqrt_etas[0] == pytest.approx(0.02, abs=1e-15) and s.sqrt_etas[-1] == pytest.approx(0.99, abs=1e-12)
    assert torch.all(s.alphas > 0)
    # other parameters change the schedule as the closed form says
    s2 = eta_schedule(steps=4, min_noise_level=0.1, etas_end=0.5, kappa=0.5, power=1.0)
    start = min(0.1 / 0.5, 0.1)
    expected = torch.tensor([start * (0.5 / start) ** (i / 3) for i in range(4)], dtype=torch.float64)
    assert torch.allclose(s2.sqrt_etas, expected) and s2.kappa == 0.5
    assert torch.allclose(s2.input_std, torch.sqrt(0.25 * s2.etas + 1))


@pytest.mark.parametrize("kwargs, match", [
    (dict(steps=1), "steps"), (dict(steps=2.5), "steps"), (dict(steps=True), "steps"),
    (dict(kappa=0.0), "kappa"), (dict(kappa=float("nan")), "kappa"), (dict(min_noise_level=-0.1), "min_noise_level"),
    (dict(power=0.0), "power"), (dict(etas_end=1.5), "etas_end"), (dict(etas_end=0.01), "etas_end"),
])
def test_schedule_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eta_schedule(**kwargs)


def test_bad_diffusion_arguments(data):
    x0, y0, lq, mask = data
    with pytest.raises(ValueError, match="posterior mode 'eq4'"):
        ResShiftDiffusion(posterior="eq4")
    with pytest.raises(ValueError, match="EtaSchedule"):
        ResShiftDiffusion(schedule={"steps": 15})
    d = ResShiftDiffusion()
    with pytest.raises(ValueError, match=r"\[0, 14\]"):
        d.q_sample(x0, y0, torch.tensor([0, 15]))
    with pytest.raises(ValueError, match="batch"):
        d.q_sample(x0, y0, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        d.scale_input(x0, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="sf"):
        d.sample(ToyNet(), lq.float(), sf=0)
    with pytest.raises(ValueError, match="seed or generator"):
        d.sample(ToyNet(), lq.float(), seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="lambdas"):
        d.training_loss(UpstreamOracle(x0), x0, y0, lq, lambdas=(1.0,))
    with pytest.raises(ValueError, match="perceptual"):
        d.training_loss(UpstreamOracle(x0), x0, y0, lq, perceptual_weight=0.1)


# ---------------------------------------------------------------------------------------------------- forward process
@pytest.mark.parametrize("posterior", ["paper", "reference"])
@pytest.mark.parametrize("i", [0, 6, 14])
def test_forward_marginal_monte_carlo(posterior, i):
    """Eq. 2: empirical mean/variance over 20k draws per site match x0 + η(y0 - x0) and κ²η·M."""
    d = ResShiftDiffusion(posterior=posterior)
    n = 20000
    g = torch.Generator().manual_seed(7 + i)
    site_x0 = torch.tensor([[-0.5, 0.3], [0.9, -1.0]], dtype=torch.float64)
    site_y0 = torch.tensor([[0.4, -0.2], [0.1, 0.7]], dtype=torch.float64)
    site_m = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    x0 = site_x0.expand(n, 1, 2, 2)
    y0 = site_y0.expand(n, 1, 2, 2)
    mask = site_m.expand(n, 1, 2, 2)
    t = torch.full((n,), i, dtype=torch.long)
    xt = d.q_sample(x0, y0, t, mask, generator=g)
    assert xt.dtype == torch.float64 and xt.shape == (n, 1, 2, 2)
    eta, _ = oracle_etas(i)
    want_mean = site_x0 + eta * (site_y0 - site_x0)
    want_var = KAPPA ** 2 * eta * site_m
    mean, var = d.q_mean_variance(x0[:1], y0[:1], t[:1], mask[:1])
    floor = 1e-7 * (1 - site_m) if posterior == "reference" else 0.0
    assert torch.allclose(mean[0, 0], want_mean) and torch.allclose(var[0, 0], want_var + floor)
    emp_mean, emp_var = xt.mean(0)[0], xt.var(0)[0]
    active = site_m.bool()
    tol_mean = 5 * math.sqrt(KAPPA ** 2 * eta / n)
    assert torch.all((emp_mean - want_mean)[active].abs() < tol_mean)
    assert torch.allclose(emp_var[active], want_var[active], rtol=5 * math.sqrt(2 / n))
    if posterior == "paper":  # inactive sites: exactly the shifted mean, zero variance
        assert torch.equal(xt[:, 0][:, ~active], want_mean[~active].expand(n, -1))
    else:  # reference: 1e-7 noise floor
        assert torch.allclose(emp_mean[~active], want_mean[~active], atol=1e-8)
        assert torch.allclose(emp_var[~active].sqrt(), torch.full((2,), 1e-7, dtype=torch.float64), rtol=0.05)


def test_q_sample_per_sample_t_and_no_mask(data):
    x0, y0, _, mask = data
    d = ResShiftDiffusion()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.tensor([3, 11])
    both = d.q_sample(x0, y0, t, mask, noise)
    for b in range(2):
        one = d.q_sample(x0[b:b + 1], y0[b:b + 1], t[b:b + 1], mask[b:b + 1], noise[b:b + 1])
        assert torch.allclose(both[b:b + 1], one, rtol=0, atol=1e-15)
        eta, _ = oracle_etas(int(t[b]))
        manual = x0[b] + eta * (y0[b] - x0[b]) + KAPPA * math.sqrt(eta) * mask[b] * noise[b]
        assert torch.allclose(both[b], manual, atol=1e-12)
    # mask=None means all ones; float32 in → float32 out
    full = d.q_sample(x0.float(), y0.float(), t, None, noise.float())
    assert full.dtype == torch.float32
    assert torch.allclose(full, d.q_sample(x0, y0, t, torch.ones_like(mask), noise).float(), atol=1e-5)


@pytest.mark.parametrize("posterior", ["paper", "reference"])
def test_prior_sample(data, posterior):
    _, y0, _, mask = data
    d = ResShiftDiffusion(posterior=posterior)
    noise = torch.randn(y0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xT = d.prior_sample(y0, mask, noise)
    floor = 1e-7 * (1 - mask) if posterior == "reference" else 0.0
    assert torch.allclose(xT, y0 + (KAPPA * 0.99 * mask + floor) * noise, rtol=0, atol=1e-14)
    if posterior == "paper":
        off = (mask == 0).expand_as(y0)
        assert torch.equal(xT[off], y0[off])
    assert torch.allclose(d.prior_sample(y0, None, noise), y0 + KAPPA * 0.99 * noise)


def test_scale_input(data):
    x0, *_ = data
    t = torch.tensor([0, 14])
    got = ResShiftDiffusion().scale_input(x0, t)
    assert torch.allclose(got[0], x0[0] / 1.0008, atol=1e-6) and torch.allclose(got[1], x0[1] / 2.218197, atol=1e-6)
    assert ResShiftDiffusion(normalize_input=False).scale_input(x0, t) is x0


# ---------------------------------------------------------------------------------------------------- reverse process
@pytest.mark.parametrize("posterior", ["paper", "reference"])
def test_full_mask_step_is_plain_resshift(data, posterior):
    x_t, x0_hat, _, _ = data
    d = ResShiftDiffusion(posterior=posterior)
    ones = torch.ones(2, 1, 8, 8, dtype=torch.float64)
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for i in range(T):
        t = torch.full((2,), i, dtype=torch.long)
        want = plain_resshift_step(x_t, x0_hat, i, noise)
        for m in (ones, None):
            got = d.p_step(x_t, x0_hat, t, m, noise)
            assert torch.allclose(got, want, rtol=0, atol=1e-12), (i, (got - want).abs().max())
        if i == 0:  # last step: mean = x̂0, no noise
            assert torch.allclose(d.p_step(x_t, x0_hat, t, ones, noise), x0_hat, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reverse_step_to_the_previous_index_is_p_step(dtype):
    """The generalised step t → s with s = t - 1 is the full-mask p_step exactly (same noise from the same seed)."""
    d = ResShiftDiffusion()
    g = torch.Generator().manual_seed(5)
    x_t, x0_hat = torch.randn(2, 3, 8, 8, generator=g, dtype=dtype), torch.randn(2, 3, 8, 8, generator=g, dtype=dtype)
    for i in range(1, T):
        got = d.reverse_step(x_t, x0_hat, i, i - 1, generator=torch.Generator().manual_seed(i))
        want = d.p_step(x_t, x0_hat, torch.full((2,), i), torch.ones(2, 1, 8, 8, dtype=dtype),
                        generator=torch.Generator().manual_seed(i))
        assert torch.equal(got, want), i
    assert torch.equal(d.reverse_step(x_t, x0_hat, 3, None), x0_hat)
    with pytest.raises(ValueError, match="s < t"):
        d.reverse_step(x_t, x0_hat, 3, 5)
    with pytest.raises(ValueError, match="outside"):
        d.reverse_step(x_t, x0_hat, T, 0)


def test_eq4_mixed_mask(data):
    x_t, x0_hat, _, mask = data
    noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    inactive = (mask == 0).expand_as(x_t)
    paper, ref = ResShiftDiffusion(posterior="paper"), ResShiftDiffusion(posterior="reference")
    for i in (0, 1, 8, 14):
        t = torch.full((2,), i, dtype=torch.long)
        plain = plain_resshift_step(x_t, x0_hat, i, noise)
        got = paper.p_step(x_t, x0_hat, t, mask, noise)
        assert torch.equal(got[inactive], x0_hat[inactive])  # Eq. 4: exactly x̂0, no noise, no shift
        assert torch.allclose(got[~inactive], plain[~inactive], rtol=0, atol=1e-12)
        got_ref = ref.p_step(x_t, x0_hat, t, mask, noise)
        assert torch.allclose(got_ref[~inactive], plain[~inactive], rtol=0, atol=1e-12)
        eta, eta_prev = oracle_etas(i)
        ref_mean = (eta_prev / eta) * x_t + (1 - eta_prev / eta) * x0_hat
        floor = 1e-7 * noise if i > 0 else 0.0 * noise
        assert torch.allclose(got_ref[inactive], (ref_mean + floor)[inactive], rtol=0, atol=1e-12)
    # per-sample t: sample 0 at i = 0 (no noise), sample 1 at i = 9
    t = torch.tensor([0, 9])
    got = paper.p_step(x_t, x0_hat, t, mask, noise)
    assert torch.allclose(got[0], torch.where(mask[0] > 0, plain_resshift_step(x_t, x0_hat, 0, noise)[0], x0_hat[0]))
    assert torch.allclose(got[1], torch.where(mask[1] > 0, plain_resshift_step(x_t, x0_hat, 9, noise)[1], x0_hat[1]))


@pytest.mark.parametrize("posterior", ["paper", "reference"])
def test_zero_mask_chain_is_deterministic(posterior):
    d = ResShiftDiffusion(posterior=posterior)
    net = ToyNet()
    lq = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(5)) * 2 - 1
    masks = (torch.zeros(2, 1, 8, 8), torch.zeros(2, 4, 4))
    with torch.no_grad():
        r1 = d.sample(net, lq, sf=2, seed=1, masks=masks, clamp=False, return_trajectory=True)
        r2 = d.sample(net, lq, sf=2, seed=2, masks=masks, clamp=False, return_trajectory=True)
    if posterior == "paper":
        assert torch.equal(r1.sr, r2.sr)
    else:  # deterministic up to the reference's 1e-7 noise floor on inactive sites
        assert torch.allclose(r1.sr, r2.sr, rtol=0, atol=1e-5)
    assert r1.density.tolist() == [0.0, 0.0] and r1.diffusion_density.tolist() == [0.0, 0.0]
    assert len(r1.trajectory) == T + 1 and len(r1.predictions) == T
    if posterior == "paper":  # the state is replaced by the latest prediction at every step
        assert torch.equal(r1.trajectory[0], r1.y0)
        for x, pred in zip(r1.trajectory[1:], r1.predictions):
            assert torch.equal(x, pred)
        assert torch.equal(r1.sr, r1.predictions[-1])
    else:  # deterministic posterior-mean recursion from x_T = y0 (t > 0 noise is 1e-7, below the assert tolerance)
        x = r1.y0
        for k, i in enumerate(range(T - 1, -1, -1)):
            eta, eta_prev = oracle_etas(i)
            x = (eta_prev / eta) * x + (1 - eta_prev / eta) * r1.predictions[k]
        assert torch.allclose(r1.sr, x, atol=1e-5)


def test_zero_mask_through_quadtree_constant_image():
    """A constant LR image at s = 0 (strict paper threshold) gives an all-zero mask, hence a deterministic chain."""
    pytest.importorskip("qdm.quadtree")
    d = ResShiftDiffusion()
    lq = torch.full((1, 3, 8, 8), 0.25)
    with torch.no_grad():
        r1 = d.sample(ToyNet(), lq, sf=2, threshold=0.0, mode="paper", seed=0, clamp=False, return_trajectory=True)
        r2 = d.sample(ToyNet(), lq, sf=2, threshold=0.0, mode="paper", seed=9, clamp=False)
    assert r1.density.item() == 0.0 and r1.diffusion_density.item() == 0.0
    assert torch.equal(r1.sr, r2.sr) and torch.equal(r1.sr, r1.predictions[-1])


# ---------------------------------------------------------------------------------------------------- training loss
def test_training_loss_oracle_is_zero(data):
    x0, y0, lq, mask = data
    d = ResShiftDiffusion()
    net = UpstreamOracle(x0)
    out = d.training_loss(net, x0, y0, lq, mask, generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "mse_down", "mse_up"}
    assert out["loss"].item() == 0.0 and out["mse_down"].item() == 0.0 and out["mse_up"].item() == 0.0
    assert out["loss"].dim() == 0 and out["loss"].dtype == torch.float64


def test_training_loss_calls_model_with_scaled_input(data):
    x0, y0, lq, mask = data
    d = ResShiftDiffusion()
    net = UpstreamOracle(x0)
    t = torch.tensor([2, 13])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    mm = torch.ones(2, 4, 4)
    d.training_loss(net, x0, y0, lq, mask, t=t, noise=noise, model_mask=mm)
    x_in, t_seen, mask_seen, up = net.seen[-1]
    assert torch.allclose(x_in, d.scale_input(d.q_sample(x0, y0, t, mask, noise), t))
    assert torch.equal(t_seen, t) and mask_seen is mm and up is True
    # random t / noise come only from the generator
    a = d.training_loss(ToyNet().double(), x0, y0, lq, generator=torch.Generator().manual_seed(8))
    b = d.training_loss(ToyNet().double(), x0, y0, lq, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a["loss"], b["loss"])


def test_training_loss_lambdas_weight_terms(data):
    x0, y0, lq, mask = data
    d = ResShiftDiffusion()
    net = UpstreamOracle(x0, a=0.5, b=-0.25)
    out = d.training_loss(net, x0, y0, lq, mask, lambdas=(2.0, 3.0))
    assert out["mse_down"].item() == pytest.approx(0.25) and out["mse_up"].item() == pytest.approx(0.0625)
    assert out["loss"].item() == pytest.approx(2.0 * 0.25 + 3.0 * 0.0625)
    out = d.training_loss(net, x0, y0, lq, mask)  # default λ1 = λ2 = 1
    assert out["loss"].item() == pytest.approx(0.3125)


def test_training_loss_model_without_upstream(data):
    x0, y0, lq, mask = data
    d = ResShiftDiffusion()
    seen = {}

    def baseline(x, t, lq, mask=None):
        seen["mask"] = mask
        return x0 + 0.5

    mm = torch.zeros(2, 4, 4)
    out = d.training_loss(baseline, x0, y0, lq, mask, lambdas=(2.0, 100.0), model_mask=mm)
    assert seen["mask"] is mm
    assert out["mse_up"].item() == 0.0 and out["mse_down"].item() == pytest.approx(0.25)
    assert out["loss"].item() == pytest.approx(0.5)  # λ2 ignored
    # an nn.Module without return_upstream as well
    out = d.training_loss(ToyNet().double(), x0, y0, lq, mask)
    assert out["mse_up"].item() == 0.0 and out["loss"].item() == pytest.approx(out["mse_down"].item())


def test_training_loss_perceptual_hook(data):
    x0, y0, lq, mask = data
    d = ResShiftDiffusion()
    calls = []

    def perceptual(pred, target):
        calls.append((pred, target))
        return (pred - target).abs().mean() * 10

    net = UpstreamOracle(x0, a=0.5, b=0.0)
    out = d.training_loss(net, x0, y0, lq, mask, perceptual=perceptual, perceptual_weight=0.1)
    assert len(calls) == 1 and torch.allclose(calls[0][0], x0 + 0.5) and calls[0][1] is x0
    assert out["perceptual"].item() == pytest.approx(5.0)
    assert out["loss"].item() == pytest.approx(0.25 + 0.1 * 5.0)
    # gradients flow through all terms
    w = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def model(x, t, lq, mask=None, return_upstream=False):
        return x0 + w, x0 + 2 * w

    out = d.training_loss(model, x0, y0, lq, mask, perceptual=lambda p, t: (p - t).sum(), perceptual_weight=1.0)
    out["loss"].backward()
    assert w.grad is not None and torch.isfinite(w.grad)


# ---------------------------------------------------------------------------------------------------- sampler
def test_sample_seeded_reproducible_with_quadtree_masks():
    pytest.importorskip("qdm.quadtree")
    d = ResShiftDiffusion()
    lq = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(11)) * 2 - 1
    lq[:, :, :4, :4] = 0.1  # a constant block, inactive at s = 0 in strict mode
    net = WindowToyNet()
    with torch.no_grad():
        a = d.sample(net, lq, sf=2, threshold=0.0, seed=0)
        b = d.sample(net, lq, sf=2, threshold=0.0, seed=0)
        c = d.sample(net, lq, sf=2, threshold=0.0, seed=1)
    assert isinstance(a, SampleResult)
    assert torch.equal(a.sr, b.sr) and not torch.equal(a.sr, c.sr)
    assert a.sr.shape == (2, 3, 16, 16) and a.sr.abs().max() <= 1
    assert a.diffusion_mask.shape == (2, 1, 16, 16) and a.model_mask.shape == (2, 8, 8)
    assert torch.all(a.diffusion_mask[:, :, :8, :8] == 0) and 0 < a.diffusion_density.min() < 1
    assert torch.allclose(a.density, a.model_mask.flatten(1).mean(1))
    assert a.window_density is not None and a.window_density.shape == (2,)
    assert torch.all(a.window_density >= a.density)
    assert net.calls[-1]["mask"] is c.model_mask  # the model mask goes to the model
    # on inactive sites (paper posterior) the output is the last prediction
    traj = d.sample(net, lq, sf=2, threshold=0.0, seed=0, clamp=False, return_trajectory=True)
    off = (traj.diffusion_mask == 0).expand_as(traj.sr)
    assert torch.equal(traj.sr[off], traj.predictions[-1][off])
    assert torch.equal(traj.sr.clamp(-1, 1), a.sr)


def test_sample_full_mask_and_generator():
    d = ResShiftDiffusion()
    lq = torch.rand(1, 3, 4, 6, generator=torch.Generator().manual_seed(12)) * 2 - 1
    net = ToyNet()
    with torch.no_grad():
        r = d.sample(net, lq, sf=4, threshold=None, generator=torch.Generator().manual_seed(3))
        r2 = d.sample(net, lq, sf=4, seed=3)
    assert torch.equal(r.sr, r2.sr)
    assert r.sr.shape == (1, 3, 16, 24) and r.model_mask.shape == (1, 8, 12)
    assert r.density.tolist() == [1.0] and r.diffusion_density.tolist() == [1.0] and r.window_density is None
    assert torch.allclose(r.y0, F.interpolate(lq, scale_factor=4, mode="bicubic", align_corners=False))
    assert net.calls[-1]["mask"] is None  # full mask → dense forward
    assert [int(c["t"][0]) for c in net.calls[-T:]] == list(range(T - 1, -1, -1))
    # window density for a windowed model with the full mask
    with torch.no_grad():
        rw = d.sample(WindowToyNet(), lq, sf=4, seed=3)
    assert rw.window_density.tolist() == [1.0]
    assert torch.equal(rw.sr, r.sr)  # same weights, same seed


def test_sample_full_mask_posterior_modes_agree():
    """With a full mask both posterior modes run plain ResShift, so a seeded sample is identical."""
    lq = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(13)) * 2 - 1
    with torch.no_grad():
        a = ResShiftDiffusion(posterior="paper").sample(ToyNet(), lq, sf=2, seed=4)
        b = ResShiftDiffusion(posterior="reference").sample(ToyNet(), lq, sf=2, seed=4)
    assert torch.allclose(a.sr, b.sr, atol=1e-6)
