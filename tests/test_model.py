"""QDM dual-stream network: parameter counts, exactness of the sparse path, batching, shapes, oracles."""
import math

import pytest
import torch

from qdm.layers import sincos_pos_embed_2d
from qdm.model import QDM, WindowPlan, qdm_b, qdm_l, qdm_s

PUBLISHED = {  # docs/qdm.md §5: reference learnable counts and the paper's Table 5 (frozen tables at 128²)
    qdm_s: (49_200_588, 50_871_756),
    qdm_b: (195_721_932, 199_064_268),
    qdm_l: (687_485_132, 691_941_580),
}


def tiny(dtype=torch.float64, seed=0, **kw) -> QDM:
    """A small QDM with random non-zero weights (zero-init would make every output 0)."""
    torch.manual_seed(seed)
    cfg = dict(dim=32, depth=2, heads=2)
    cfg.update(kw)
    m = QDM(**cfg).to(dtype).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.2)
    return m


def inputs(b=2, h=64, w=48, lq_scale=2, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, h, w, generator=g, dtype=dtype)
    lq = torch.randn(b, 3, h // lq_scale, w // lq_scale, generator=g, dtype=dtype)
    t = torch.randint(0, 15, (b,), generator=g)
    return x, t, lq


def patch_bits(mask, p=2):
    return mask.bool().repeat_interleave(p, -2).repeat_interleave(p, -1)[:, None]


@pytest.mark.parametrize("factory", list(PUBLISHED))
def test_parameter_counts_match_reference_and_table5(factory):
    with torch.device("meta"):
        model = factory()
    counts = model.param_counts()
    assert (counts["learnable"], counts["table5"]) == PUBLISHED[factory]


@pytest.mark.parametrize("depth,dim,window", [(1, 64, 8), (3, 128, 4), (2, 96, 16)])
def test_parameter_formula_of_the_spec(depth, dim, window):
    # docs/qdm.md §5: total at 128² = 54·N·d² + 45·N·d + 6·d² + 5488·d + 204, learnable = total − 4352·d; window-invariant.
    with torch.device("meta"):
        m = QDM(dim=dim, depth=depth, heads=dim // 32, window=window)
    total = 54 * depth * dim**2 + 45 * depth * dim + 6 * dim**2 + 5488 * dim + 204
    assert m.param_counts()["table5"] == total
    assert m.param_counts()["learnable"] == total - 4352 * dim
    assert sum(p.numel() for p in m.upstream.blocks[0].parameters()) == 18 * dim**2 + 15 * dim
    assert sum(p.numel() for p in m.downstream.blocks[0].parameters()) == 36 * dim**2 + 30 * dim


def test_both_streams_output_exactly_zero_at_initialisation():
    m = QDM(dim=32, depth=2, heads=2).double()
    x, t, lq = inputs()
    out, up = m(x, t, lq, return_upstream=True)
    assert torch.count_nonzero(out) == 0 and torch.count_nonzero(up) == 0
    mask = (torch.rand(2, 32, 24) > 0.5).double()
    assert torch.count_nonzero(m(x, t, lq, mask=mask)) == 0


def test_sparse_equals_dense_on_selected_patches_and_upstream_elsewhere():
    m = tiny()
    x, t, lq = inputs()
    dense, up = m(x, t, lq, return_upstream=True)
    mask = torch.zeros(2, 32, 24, dtype=torch.float64)
    mask[0, 3, 5] = 1  # a single patch: its window is computed, the other 63 patches of it take the upstream value
    mask[1, 16:32, 8:24] = 1  # four full windows
    mask[1, 0, 0] = 1
    sparse = m(x, t, lq, mask=mask)
    bits = patch_bits(mask).expand_as(sparse)
    assert (sparse - dense)[bits].abs().max() <= 1e-10
    assert torch.equal(sparse[~bits], up[~bits])
    assert (dense - up).abs().max() > 1e-3  # the dense path does not merge


def test_full_mask_equals_dense_and_chunking_does_not_matter():
    m = tiny()
    x, t, lq = inputs()
    dense = m(x, t, lq)
    full = torch.ones(2, 32, 24, dtype=torch.float64)
    for chunk in (1, 3, 5, 12, 64):
        assert (m(x, t, lq, mask=full, chunk_size=chunk) - dense).abs().max() <= 1e-10
        assert (m(x, t, lq, chunk_size=chunk) - dense).abs().max() <= 1e-10


def test_batch_equals_each_sample_alone():
    m = tiny()
    x, t, lq = inputs(b=3)
    g = torch.Generator().manual_seed(5)
    mask = (torch.rand(3, 32, 24, generator=g) > torch.tensor([0.9, 0.99, 0.5])[:, None, None]).double()
    for chunk in (2, 7, 64):
        batched = m(x, t, lq, mask=mask, chunk_size=chunk)
        dense = m(x, t, lq, chunk_size=chunk)
        for i in range(3):
            alone = m(x[i:i + 1], t[i:i + 1], lq[i:i + 1], mask=mask[i:i + 1], chunk_size=chunk)
            assert (batched[i:i + 1] - alone).abs().max() <= 1e-10
            assert (dense[i:i + 1] - m(x[i:i + 1], t[i:i + 1], lq[i:i + 1], chunk_size=chunk)).abs().max() <= 1e-10


@pytest.mark.parametrize("h,w", [(16, 16), (32, 80), (96, 48)])
def test_non_square_and_off_size_inputs(h, w):
    m = tiny()
    x, t, lq = inputs(b=2, h=h, w=w, lq_scale=1)
    dense, up = m(x, t, lq, return_upstream=True)
    assert dense.shape == up.shape == x.shape
    mask = (torch.rand(2, h // 2, w // 2, generator=torch.Generator().manual_seed(2)) > 0.8).double()
    sparse = m(x, t, lq, mask=mask)
    bits = patch_bits(mask).expand_as(sparse)
    assert (sparse - dense)[bits].abs().max() <= 1e-10 and torch.equal(sparse[~bits], up[~bits])


def _oracle_sincos(gh, gw, dim):
    """MAE recipe written out element by element: first half encodes the column, second half the row."""
    table = torch.zeros(gh * gw, dim, dtype=torch.float64)
    q = dim // 4
    for r in range(gh):
        for c in range(gw):
            for k in range(q):
                om = 1.0 / 10000 ** (k / q)
                table[r * gw + c, k], table[r * gw + c, q + k] = math.sin(c * om), math.cos(c * om)
                table[r * gw + c, 2 * q + k], table[r * gw + c, 3 * q + k] = math.sin(r * om), math.cos(r * om)
    return table


def test_sincos_table_matches_mae_recipe_for_rectangles():
    got = sincos_pos_embed_2d(3, 5, 16, dtype=torch.float64)
    assert (got - _oracle_sincos(3, 5, 16)).abs().max() < 1e-6  # float32-rounded like the reference's numpy table


def _naive_forward(m: QDM, x, t, lq):
    """Dense QDM written out per window with explicit softmax attention: an independent oracle of layout and order."""
    import torch.nn.functional as F

    def attn(q, k, v, heads):
        q, k, v = (z.unflatten(-1, (heads, -1)).transpose(0, 1) for z in (q, k, v))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        return (a @ v).transpose(0, 1).flatten(1)

    def ln(z):
        return F.layer_norm(z, z.shape[-1:], eps=1e-6)

    def mlp(mod, z):
        return mod.fc2(F.gelu(mod.fc1(z), approximate="tanh"))

    H, W = x.shape[-2:]
    xin = torch.cat([x, F.interpolate(lq, size=(H, W), mode="bicubic", align_corners=False)], 1)
    out = torch.zeros_like(x)
    d, heads, P, p, w = m.dim, m.heads, m.up_patch, m.down_patch, m.window
    for b in range(x.shape[0]):
        up = m.upstream
        tok = up.x_embedder.proj(xin[b:b + 1])[0].flatten(1).T + _oracle_sincos(H // P, W // P, d).float().double()
        c = up.t_embedder(t[b:b + 1])[0]
        for blk in up.blocks:
            s = blk.adaLN_modulation(c).chunk(6)
            tok = tok + s[2] * blk.attn.proj(attn(*_qkv(blk.attn, ln(tok) * (1 + s[1]) + s[0]), heads))
            tok = tok + s[5] * mlp(blk.mlp, ln(tok) * (1 + s[4]) + s[3])
        ctx = tok
        dn = m.downstream
        cd = dn.t_embedder(t[b:b + 1])[0]
        pos = _oracle_sincos(H // p, W // p, d).float().double().reshape(H // p, W // p, d)
        span = p * w
        for wy in range(H // span):
            for wx in range(W // span):
                patch = xin[b:b + 1, :, wy * span:(wy + 1) * span, wx * span:(wx + 1) * span]
                z = dn.x_embedder.norm(dn.x_embedder.proj(patch)[0].flatten(1).T)
                z = z + pos[wy * w:(wy + 1) * w, wx * w:(wx + 1) * w].reshape(-1, d)
                for blk in dn.blocks:
                    s = blk.adaLN_modulation1(cd).chunk(6) + blk.adaLN_modulation2(cd).chunk(6)
                    z = z + s[2] * blk.attn1.proj(attn(*_qkv(blk.attn1, ln(z) * (1 + s[1]) + s[0]), heads))
                    z = z + s[5] * mlp(blk.mlp1, ln(z) * (1 + s[4]) + s[3])
                    q = blk.attn2.q(ln(z) * (1 + s[7]) + s[6])
                    k, v = blk.attn2.kv(ctx).chunk(2, -1)
                    z = z + s[8] * blk.attn2.proj(attn(q, k, v, heads))
                    z = z + s[11] * mlp(blk.mlp2, ln(z) * (1 + s[10]) + s[9])
                shift, scale = dn.final_layer.adaLN_modulation(cd).chunk(2)
                y = dn.final_layer.linear(ln(z) * (1 + scale) + shift)  # (w·w, p·p·C)
                y = y.reshape(w, w, p, p, -1).permute(4, 0, 2, 1, 3).reshape(-1, span, span)
                out[b, :, wy * span:(wy + 1) * span, wx * span:(wx + 1) * span] = y
    return out


def _qkv(attn_mod, z):
    return attn_mod.qkv(z).chunk(3, -1)


def test_dense_forward_matches_naive_per_window_oracle():
    m = tiny(dim=32, depth=1, heads=2)
    x, t, lq = inputs(b=2, h=32, w=48)
    with torch.no_grad():
        assert (m(x, t, lq) - _naive_forward(m, x, t, lq)).abs().max() <= 1e-10


def test_rejects_bad_sizes_and_masks_before_compute():
    m = tiny()
    with pytest.raises(ValueError, match="multiples of 16"):
        m(*inputs(h=40, w=48))
    x, t, lq = inputs()
    with pytest.raises(ValueError, match="patch grid"):
        m(x, t, lq, mask=torch.ones(2, 16, 12))
    assert m.input_multiple == 16 and tiny(window=16).input_multiple == 32


def test_plan_covers_each_selected_window_once_and_respects_chunk_size():
    g = torch.Generator().manual_seed(3)
    sel = torch.rand(4, 5, 6, generator=g) > 0.4
    plan = WindowPlan.from_selection(sel, chunk_size=7)
    seen = torch.cat([torch.stack([imgs[:, None].expand_as(w).flatten(), w.flatten()], 1) for imgs, w in plan.steps])
    expected = sel.flatten(1).nonzero()
    assert sorted(map(tuple, seen.tolist())) == sorted(map(tuple, expected.tolist()))
    assert all(w.numel() <= 7 for _, w in plan.steps)
    assert plan.n_selected == int(sel.sum()) and plan.density == pytest.approx(sel.float().mean().item())


def test_compute_runs_on_meta_with_a_plan_from_a_real_mask():
    with torch.device("meta"):
        m = QDM(dim=64, depth=1, heads=2)
    mask = torch.zeros(1, 32, 32)
    mask[0, :16, :16] = 1
    plan = m.plan(mask, 1, 64, 64)
    x, lq = torch.empty(1, 3, 64, 64, device="meta"), torch.empty(1, 3, 64, 64, device="meta")
    t = torch.zeros(1, device="meta")
    down, up = m.compute(x, t, lq, plan)
    assert down.device.type == "meta" and down.shape == (1, 3, 64, 64) and plan.n_selected == 4


def test_dense_training_path_has_gradients():
    m = tiny(dtype=torch.float32)
    m.train()
    x, t, lq = inputs(dtype=torch.float32)
    out, up = m(x, t, lq, return_upstream=True)
    ((out - x) ** 2).mean().add(((up - x) ** 2).mean()).backward()
    assert m.downstream.blocks[0].attn2.kv.weight.grad.abs().sum() > 0
    assert m.upstream.x_embedder.proj.weight.grad.abs().sum() > 0
