"""Dual-domain ResShift baseline (spec: docs/seed-systems.md §2)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import pywt
import scipy.fft
import torch
import torch.nn.functional as F

import baselines.dualdomain as dd
from qdm.diffusion import SampleResult
from qdm_bench.measure.macs import count_macs
from qdm_bench.registry import create_model, example_inputs, resolve

NAME = "dualdomain-resshift"
SMALL = dict(channels=16)  # same topology, faster sampler tests


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def model() -> dd.DualDomainUNet:
    torch.manual_seed(0)
    return dd.dualdomain_resshift().eval()


# ---------------------------------------------------------------------------------------------------- parameters
def test_parameter_counts_match_spec_table(model):
    assert n_params(model) == 1_387_075
    expected = {"time_mlp": 98_880, "inc": 54_848, "down1": 111_168, "down2": 111_168, "bot": 111_168,
                "up1": 4_160, "dec1": 443_520, "up2": 8_256, "dec2": 443_520, "outc": 387}
    assert {name: n_params(m) for name, m in model.named_children()} == expected
    for block, parts in ((model.down1, (73_856, 8_320, 16_640, 12_352)), (model.dec2, (295_168, 33_024, 66_048,
                                                                                      49_280))):
        assert tuple(n_params(m) for m in (block.spatial, block.dct, block.dwt, block.fuse)) == parts
    assert model.in_channels == 31 and model.inc[0].in_channels == 31


@pytest.mark.parametrize("dct, dwt", [(False, True), (True, False), (False, False)])
def test_branch_toggles(dct, dwt):
    m = dd.dualdomain_resshift(dct=dct, dwt=dwt)
    # per DDB(c): the DCT branch is 2c² + 2c, the DWT branch 4c² + 4c, and each branch adds c² to the fusion input
    removed = sum((0 if dct else 3 * c * c + 2 * c) + (0 if dwt else 5 * c * c + 4 * c) for c in (64, 64, 64, 128, 128))
    assert n_params(m) == 1_387_075 - removed
    assert (m.down1.dct is None) == (not dct) and (m.down1.dwt is None) == (not dwt)
    out = m(torch.randn(1, 3, 16, 16), torch.tensor([3]), torch.rand(1, 3, 4, 4) * 2 - 1)
    assert out.shape == (1, 3, 16, 16)
    mc = count_macs(NAME, 64, dct=dct, dwt=dwt, dwt_impl="polyphase")
    assert mc.macs == m.cost_extras(64, 64)["layer_macs"] < 2_427_813_888


def test_bad_options_and_sizes(model):
    with pytest.raises(ValueError, match="dct_impl"):
        dd.DualDomainUNet(dct_impl="dense")
    with pytest.raises(ValueError, match="dwt_impl"):
        dd.DualDomainUNet(dwt_impl="pywt")
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.randn(1, 3, 36, 32), torch.tensor([0]), torch.randn(1, 3, 9, 8))


# ---------------------------------------------------------------------------------------------------- transforms
@pytest.mark.parametrize("impl", dd.DCT_IMPLS)
def test_dct_matches_scipy_orthonormal(impl):
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64, requires_grad=True)
    ref = scipy.fft.dctn(x.detach().numpy(), axes=(-2, -1), norm="ortho")
    y = dd.dct2(x, impl)
    np.testing.assert_allclose(y.detach().numpy(), ref, atol=1e-12)
    torch.testing.assert_close(dd.idct2(y, impl), x, atol=1e-12, rtol=0)
    (y ** 2).sum().backward()  # orthonormal: the gradient of ‖DCT x‖² is 2x
    torch.testing.assert_close(x.grad, 2 * x.detach(), atol=1e-12, rtol=0)
    with torch.device("meta"):
        assert dd.idct2(dd.dct2(torch.empty(1, 4, 16, 8), impl), impl).shape == (1, 4, 16, 8)


@pytest.mark.parametrize("impl", dd.DWT_IMPLS)
def test_dwt_matches_pywt_haar_reflect(impl):
    x = torch.randn(2, 3, 8, 12, dtype=torch.float64, requires_grad=True)
    ca, (ch, cv, cd) = pywt.dwt2(x.detach().numpy(), "haar", mode="reflect")
    bands = dd.dwt_haar(x, impl)
    for got, ref in zip(bands, (ca, ch, cv, cd)):
        np.testing.assert_allclose(got.detach().numpy(), ref, atol=1e-12)
    rec = dd.idwt_haar(*bands, impl=impl)
    torch.testing.assert_close(rec, x, atol=1e-12, rtol=0)
    rec.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x), atol=1e-12, rtol=0)
    with torch.device("meta"):
        assert dd.idwt_haar(*dd.dwt_haar(torch.empty(1, 4, 16, 8), impl), impl=impl).shape == (1, 4, 16, 8)


def test_implementations_give_the_same_network(model):
    x, lq, t = torch.randn(1, 3, 32, 24), torch.rand(1, 3, 8, 6) * 2 - 1, torch.tensor([7])
    with torch.no_grad():
        ref = model(x, t, lq)
        for kw in (dict(dwt_impl="polyphase"), dict(dct_impl="matrix")):
            other = dd.dualdomain_resshift(**kw)
            other.load_state_dict(model.state_dict())
            torch.testing.assert_close(other(x, t, lq), ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- conditioning
def test_fourier_encoding_channel_order():
    h, w = 8, 12
    enc = dd.fourier_features(2, h, w)
    assert enc.shape == (2, 24, h, w)
    xs = torch.linspace(0, 1, w).expand(h, w)
    ys = torch.linspace(0, 1, h)[:, None].expand(h, w)
    for k in range(6):
        f = 2 ** k * math.pi
        expected = torch.stack([torch.sin(f * xs), torch.sin(f * ys), torch.cos(f * xs), torch.cos(f * ys)])
        torch.testing.assert_close(enc[1, 4 * k:4 * k + 4], expected)


def test_amplitude_map():
    black = torch.full((1, 3, 16, 16), -1.0)
    assert torch.equal(dd.amplitude_map(black), torch.zeros(1, 1, 16, 16))
    grey = dd.amplitude_map(torch.full((1, 3, 16, 16), 0.2))  # zero padding is counted: only the interior is flat
    assert torch.all(grey[..., 3:-3, 3:-3] == 0) and torch.all(grey[..., 0, :] > 0)
    assert float(grey.max()) == pytest.approx(1.0, abs=1e-3)
    amp = dd.amplitude_map(torch.rand(2, 3, 24, 16) * 2 - 1)
    assert amp.shape == (2, 1, 24, 16) and float(amp.min()) >= 0 and float(amp.max()) <= 1
    for a in amp:
        assert float(a.min()) == 0 and float(a.max()) == pytest.approx(1.0, abs=1e-3)


def test_conditioning_channels_and_bicubic_y0(model):
    lq = torch.rand(2, 3, 8, 6) * 2 - 1
    y0, aug = model.condition(lq, 32, 24)
    torch.testing.assert_close(y0, F.interpolate(lq, size=(32, 24), mode="bicubic", align_corners=False))
    assert aug.shape == (2, 28, 32, 24)  # with x_t: the 31 input channels
    assert torch.equal(aug[:, :3], y0)
    torch.testing.assert_close(aug[:, 3:27], dd.fourier_features(2, 32, 24))
    torch.testing.assert_close(aug[:, 27:], dd.amplitude_map(y0))
    same, _ = model.condition(y0, 32, 24)  # lq already at HR size: used as y0
    assert torch.equal(same, y0)


def test_time_embedding_uses_float_index_plus_one(model):
    emb = dd.time_embedding(torch.tensor([1.0, 15.0]))
    freqs = torch.exp(-torch.arange(64) * math.log(1e4) / 63)
    torch.testing.assert_close(emb[1], torch.cat([torch.sin(15 * freqs), torch.cos(15 * freqs)]))
    seen = []
    handle = model.time_mlp.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        with torch.no_grad():
            model(torch.randn(2, 3, 16, 16), torch.tensor([0, 14]), torch.randn(2, 3, 4, 4))
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], emb)


# ---------------------------------------------------------------------------------------------------- MACs
def layer_formula(h: int, w: int) -> int:
    return 592_704 * h * w + 128 * 512 + 512 * 64  # docs/seed-systems.md §2.3: ≈ 592.7 kMAC per HR pixel plus the time MLP


@pytest.mark.parametrize("res", [64, 256, 1024, (64, 48)])
def test_mac_anchors(res):
    h, w = (res, res) if isinstance(res, int) else res
    extras = dd.dualdomain_resshift().cost_extras(h, w)
    assert extras["layer_macs"] == layer_formula(h, w)
    assert count_macs(NAME, res, dwt_impl="polyphase").macs == layer_formula(h, w)  # FFT DCT: counted 0
    default = count_macs(NAME, res).macs  # + ptwt's Haar filter convs (8 MAC per block element)
    assert default == layer_formula(h, w) + extras["dwt_macs"] == extras["layer_macs"] + extras["dwt_macs_counted"]
    blocks = [(64, 2), (64, 4), (64, 4), (128, 2), (128, 1)]
    assert extras["dwt_macs"] == sum(8 * c * (h // f) * (w // f) for c, f in blocks)
    dense = sum(2 * c * (h // f) * (w // f) * (h // f + w // f) for c, f in blocks)
    assert extras["dct_macs_dense"] == dense and extras["dct_macs_counted"] == 0
    assert count_macs(NAME, res, dct_impl="matrix", dwt_impl="polyphase").macs == layer_formula(h, w) + dense
    if res == 256:
        assert round(extras["layer_macs"] / 1e9, 2) == 38.84 and round(dense / 1e9, 1) == 10.3
        assert round(default / 1e9, 2) == 38.94
    if res == 64:
        assert round(extras["layer_macs"] / 1e9, 2) == 2.43


def test_cost_extras_batch_and_labels():
    m = dd.dualdomain_resshift(dct_impl="matrix", dwt_impl="polyphase")
    one, two = m.cost_extras(64, 64), m.cost_extras(64, 64, batch=2)
    assert two["layer_macs"] == 2 * one["layer_macs"] and two["dct_macs_counted"] == 2 * one["dct_macs_dense"]
    assert one["dct_impl"] == "dense matrix products" and one["dwt_macs_counted"] == 0
    assert "torch-dct" in dd.dualdomain_resshift().cost_extras(64, 64)["dct_impl"]
    assert dd.dualdomain_resshift(dct=False).cost_extras(64, 64)["dct_macs_dense"] == 0


# ---------------------------------------------------------------------------------------------------- registry, forward
def test_registry_entry():
    info = resolve(NAME)
    assert (info.family, info.space, info.multiple, info.uses_mask, info.num_steps, info.diffusion) == (
        "dualdomain", "pixel", 8, False, 15, "dualdomain")
    m = create_model(NAME)
    assert isinstance(m, dd.DualDomainUNet) and m.pred_type == "x0_residual" and not m.requires_uniform_t_in_batch
    inputs = example_inputs(NAME, 32, batch=2)
    with torch.no_grad():
        assert m(**inputs).shape == (2, 3, 32, 32)


@pytest.mark.parametrize("hw", [(32, 32), (64, 48)])
def test_forward_shape_and_lr_or_hr_condition(model, hw):
    h, w = hw
    x, lq, t = torch.randn(2, 3, h, w), torch.rand(2, 3, h // 4, w // 4) * 2 - 1, torch.tensor([0, 14])
    with torch.no_grad():
        out = model(x, t, lq)
        y0 = F.interpolate(lq, size=(h, w), mode="bicubic", align_corners=False)
        torch.testing.assert_close(model(x, t, y0, mask=torch.ones(2, h, w)), out)
    assert out.shape == (2, 3, h, w) and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------------- diffusion
def test_eta_table_and_forward_process():
    diff = dd.DualDomainDiffusion()
    table = [0.008, .0713, .1182, .1674, .2202, .277, .3381, .4036, .4738, .5487, .6285, .7133, .8032, .8984, .999]
    np.testing.assert_allclose(diff.schedule.etas.numpy(), table, atol=5e-5)
    assert diff.num_steps == 15 and diff.kappa == 2.0 and diff.kappa_sample == 2.0
    torch.testing.assert_close(dd.DualDomainDiffusion(kappa=0.8).schedule.etas, diff.schedule.etas)
    x0, y0, eps = torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8), torch.randn(3, 3, 8, 8)
    t = torch.tensor([0, 7, 14])
    eta = torch.tensor(table, dtype=torch.float64)[t].float().view(-1, 1, 1, 1)
    expected = (1 - eta) * x0 + eta * y0 + 2.0 * eta.sqrt() * eps
    torch.testing.assert_close(diff.q_sample(x0, y0, t, eps), expected, atol=2e-4, rtol=0)


def test_multiscale_loss_on_a_constant_error():
    diff = dd.DualDomainDiffusion()
    x0, delta = torch.rand(2, 3, 16, 16) * 2 - 1, 0.3
    out = diff.multiscale_loss(x0 + delta, x0)
    # in [0, 1] the error is δ/2 everywhere and at every scale; its orthonormal DCT is only a DC term δ/2·√(HW)
    freq = sum((1 / s) / 1.75 * (delta / 2) / math.sqrt((16 // s) ** 2) for s in (1, 2, 4))
    assert float(out["l1_pixel"]) == pytest.approx(delta / 2, rel=1e-5)
    assert float(out["l1_dct"]) == pytest.approx(freq, rel=1e-5)
    assert float(out["loss"]) == pytest.approx(delta / 2 + 2.0 * freq, rel=1e-5)


def test_residual_convention_and_training_loss_backward():
    diff = dd.DualDomainDiffusion()
    x0 = torch.rand(2, 3, 32, 32) * 2 - 1
    lq = F.interpolate(x0, scale_factor=0.25, mode="bicubic", align_corners=False)
    y0 = F.interpolate(lq, size=(32, 32), mode="bicubic", align_corners=False)
    oracle = diff.training_loss(lambda x, t, c, mask=None: x0 - y0, x0, y0, lq)  # output + y0 is x̂0
    assert float(oracle["loss"]) < 1e-6
    torch.manual_seed(0)
    net = dd.dualdomain_resshift(**SMALL)
    g = torch.Generator().manual_seed(3)
    losses = diff.training_loss(net, x0, y0, lq, generator=g, lambdas=(1.0, 1.0))
    assert set(losses) == {"loss", "l1_pixel", "l1_dct"}
    losses["loss"].backward()
    grads = [p.grad for p in net.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    again = diff.training_loss(net, x0, y0, lq, generator=torch.Generator().manual_seed(3))
    assert float(again["loss"].detach()) == pytest.approx(float(losses["loss"].detach()))


@pytest.mark.parametrize("kappa", [2.0, 0.8])
def test_posterior_switch(kappa):
    diff = dd.DualDomainDiffusion(kappa_sample=kappa)
    etas = diff.schedule.etas.tolist()
    x_t, x0_hat, y0 = torch.randn(3, 3, 4, 4), torch.rand(3, 3, 4, 4) * 2 - 1, torch.rand(3, 3, 4, 4) * 2 - 1
    t = torch.tensor([14, 5, 1])
    for row, i in enumerate(t.tolist()):
        eta, eta_prev = etas[i], etas[i - 1]
        alpha = eta - eta_prev
        # exact Gaussian posterior of the forward process: prior N(x̂0 + η_prev·e0, κ²η_prev), step N(· + α·e0, κ²α)
        e0 = y0[row] - x0_hat[row]
        v1, v2 = kappa ** 2 * eta_prev, kappa ** 2 * alpha
        gauss = (v2 * (x0_hat[row] + eta_prev * e0) + v1 * (x_t[row] - alpha * e0)) / (v1 + v2)
        project = eta_prev / eta * x_t[row] + alpha / eta * (1 - eta_prev) * x0_hat[row] \
            + alpha * eta_prev / eta * y0[row]
        zero = torch.zeros_like(x_t)
        resshift = diff.p_step(x_t, x0_hat, y0, t, "resshift", zero)[row]
        dual = diff.p_step(x_t, x0_hat, y0, t, "dualdomain", zero)[row]
        torch.testing.assert_close(resshift, gauss, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(resshift, eta_prev / eta * x_t[row] + alpha / eta * x0_hat[row], atol=1e-5,
                                   rtol=1e-5)
        torch.testing.assert_close(dual, project, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dual - resshift, alpha * eta_prev / eta * e0, atol=1e-5, rtol=1e-5)
        std = diff.p_step(x_t, x0_hat, y0, t, "dualdomain", torch.ones_like(x_t))[row] - dual
        torch.testing.assert_close(std, torch.full_like(std, math.sqrt(kappa ** 2 * eta_prev / eta * alpha)),
                                   atol=1e-5, rtol=1e-5)
    last = torch.zeros(3, dtype=torch.long)  # no noise on the last step; both forms give x̂0 there (η_0 = 0)
    for post in dd.POSTERIORS:
        torch.testing.assert_close(diff.p_step(x_t, x0_hat, y0, last, post, torch.ones_like(x_t)), x0_hat)
    with pytest.raises(ValueError, match="posterior"):
        diff.p_step(x_t, x0_hat, y0, t, "paper")


def test_sampler_determinism_and_result():
    torch.manual_seed(0)
    net = dd.dualdomain_resshift(**SMALL).eval()
    diff = dd.DualDomainDiffusion()
    lq = torch.rand(2, 3, 8, 8) * 2 - 1
    calls = []

    def counted(*args, **kw):
        calls.append(args[1].clone())
        return net(*args, **kw)

    with torch.no_grad():
        a = diff.sample(counted, lq, sf=4, seed=5)
        b = diff.sample(net, lq, sf=4, seed=5)
        c = diff.sample(net, lq, sf=4, seed=6, posterior="resshift")
        d1 = diff.sample(net, lq, sf=4, seed=1, deterministic=True, return_trajectory=True)
        d2 = diff.sample(net, lq, sf=4, seed=2, deterministic=True)
    assert isinstance(a, SampleResult) and a.sr.shape == (2, 3, 32, 32)
    assert torch.equal(a.sr, b.sr) and not torch.equal(a.sr, c.sr) and torch.equal(d1.sr, d2.sr)
    assert float(a.sr.abs().max()) <= 1 and float(c.sr.abs().max()) <= 1
    assert [int(t[0]) for t in calls] == list(range(14, -1, -1))
    torch.testing.assert_close(a.y0, F.interpolate(lq, size=(32, 32), mode="bicubic", align_corners=False))
    assert torch.equal(d1.trajectory[0], d1.y0) and len(d1.predictions) == 15
    x0_hat = (d1.y0 + net(d1.trajectory[0], torch.full((2,), 14), lq)).clamp(-1, 1)
    torch.testing.assert_close(d1.predictions[0], x0_hat)
    assert torch.equal(d1.predictions[-1].clamp(-1, 1), d1.sr)  # no noise on the last step: x_0 = x̂0
    assert torch.all(a.diffusion_mask == 1) and torch.all(a.model_mask == 1)
    assert a.density.tolist() == [1.0, 1.0] and a.diffusion_density.tolist() == [1.0, 1.0]


def test_sampler_prior_uses_kappa_sample():
    def zero_net(x, t, lq, mask=None):
        return torch.zeros_like(x)

    lq = torch.zeros(1, 3, 16, 16)
    for kappa in (2.0, 0.8):
        res = dd.DualDomainDiffusion(kappa_sample=kappa).sample(zero_net, lq, sf=1, seed=0, return_trajectory=True)
        std = float(res.trajectory[0].std())
        assert std == pytest.approx(kappa * math.sqrt(0.999), rel=0.05)
    with pytest.raises(ValueError, match="seed or generator"):
        dd.DualDomainDiffusion().sample(zero_net, lq, seed=0, generator=torch.Generator())
