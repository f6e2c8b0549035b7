"""U-Net and Swin-U-Net baselines (spec: docs/baselines.md §2, §3, §6, §8)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.flop_counter import FlopCounterMode

from baselines.swin_unet import BasicLayer, SwinTransformerBlock, WindowAttention, shift_window_mask, swin_unet
from baselines.unet import AttentionBlock, Downsample, ResBlock, Upsample, unet
from qdm_bench.registry import create_model, resolve

SMALL = dict(model_channels=32)  # levels of 32, 64, 64, 128 channels; 1, 2, 2, 4 heads of 32
SMALL_SWIN = dict(model_channels=32, swin_embed_dim=64)  # 2 Swin heads of 32


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def on_meta(factory, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return factory(**kw)


# ---- parameter formulas of docs/baselines.md §2.5 / §3.5 (the oracle), generalised to model_channels mc, time dim 4·mc ----

def resblock_formula(cin: int, cout: int, tdim: int) -> int:
    n = 2 * cin + 9 * cin * cout + cout + tdim * 2 * cout + 2 * cout + 2 * cout + 9 * cout * cout + cout
    return n + (cin * cout + cout if cin != cout else 0)


def attention_formula(c: int) -> int:
    return 4 * c * c + 6 * c


def basic_layer_formula(c: int, e: int, heads: int, window: int = 8, depth: int = 2) -> int:
    block = 2 * e + 3 * e * e + 3 * e + (2 * window - 1) ** 2 * heads + e * e + e + 2 * e + 4 * e * e + 4 * e \
        + 4 * e * e + e
    return c * e + e + e * c + c + depth * block


def unet_formula(mc: int, attn, mult=(1, 2, 2, 4), nrb: int = 2) -> int:
    """Total of the §2.3 topology from the per-module formulas; ``attn(c)`` is the attention layer's count."""
    tdim = 4 * mc
    total = mc * tdim + tdim + tdim * tdim + tdim  # time MLP
    total += 9 * 6 * mc + mc  # conv_in
    ch, skips = mc, [mc]
    for level, m in enumerate(mult):
        for i in range(nrb):
            total += resblock_formula(ch, m * mc, tdim) + (attn(m * mc) if i == 0 else 0)
            ch = m * mc
            skips.append(ch)
        if level < len(mult) - 1:
            total += 9 * ch * ch + ch
            skips.append(ch)
    total += 2 * resblock_formula(ch, ch, tdim) + attn(ch)  # middle
    for level, m in reversed(list(enumerate(mult))):
        for i in range(nrb + 1):
            total += resblock_formula(ch + skips.pop(), m * mc, tdim) + (attn(m * mc) if i == 0 else 0)
            ch = m * mc
        if level:
            total += 9 * ch * ch + ch
    return total + 2 * mc + 9 * mc * 3 + 3  # head: GN + conv


def test_figure5_parameter_counts_exact():
    assert n_params(on_meta(unet)) == 115_984_323
    assert n_params(on_meta(swin_unet)) == 118_593_583
    # the formulas themselves reproduce the measured totals
    assert unet_formula(160, attention_formula) == 115_984_323
    assert unet_formula(160, lambda c: basic_layer_formula(c, 192, 6)) == 118_593_583


def test_small_variant_matches_per_module_formulas():
    assert n_params(on_meta(unet, **SMALL)) == unet_formula(32, attention_formula)
    assert n_params(on_meta(swin_unet, **SMALL_SWIN)) == unet_formula(32, lambda c: basic_layer_formula(c, 64, 2))
    with torch.device("meta"):
        assert n_params(ResBlock(64, 64, 128)) == resblock_formula(64, 64, 128)
        assert n_params(ResBlock(64, 128, 128)) == resblock_formula(64, 128, 128)
        assert n_params(AttentionBlock(96, 32)) == attention_formula(96)
        assert n_params(BasicLayer(96, 64, heads=2)) == basic_layer_formula(96, 64, 2)
        assert n_params(Downsample(64)) == n_params(Upsample(64)) == 9 * 64 * 64 + 64


def test_registry_entries_and_no_buffers():
    assert resolve("unet").multiple == 8 and resolve("swin-unet").multiple == 64
    assert on_meta(unet).model_channels == 160 and on_meta(swin_unet).model_channels == 160
    assert on_meta(unet).input_multiple == 8
    assert on_meta(swin_unet).input_multiple == 64  # 3 downsamples × 8×8 windows at the 1/8 level
    assert list(on_meta(swin_unet).buffers()) == []  # masks and indices are built lazily, not stored
    m = create_model("unet", model_channels=32)
    assert n_params(m) == unet_formula(32, attention_formula)


# ---- MACs against docs/baselines.md §6.1 (closed form) and §6.2 (measured anchors) ----

def closed_form_macs(res: int, swin: bool) -> int:
    """Spec §6.1 closed-form MACs of the Figure-5 model at res×res, batch 1."""
    chans, e = (160, 320, 320, 640), 192
    size = [res * res // 4 ** lvl for lvl in range(4)]

    def rb(cin, cout, s):
        return 9 * s * cout * (cin + cout) + (cin != cout) * s * cin * cout + 640 * 2 * cout

    def attn(c, s):
        return 2 * s * c * e + 2 * (12 * s * e * e + 2 * 64 * s * e) if swin else 4 * s * c * c + 2 * s * s * c

    total = 9 * size[0] * 6 * 160 + 9 * size[0] * 160 * 3 + 160 * 640 + 640 * 640
    ch, skips = 160, [160]
    for lvl, c in enumerate(chans):
        total += rb(ch, c, size[lvl]) + attn(c, size[lvl]) + rb(c, c, size[lvl])
        ch = c
        skips += [c, c]
        if lvl < 3:
            total += 9 * size[lvl + 1] * c * c
            skips.append(c)
    total += 2 * rb(ch, ch, size[3]) + attn(ch, size[3])
    for lvl in range(3, -1, -1):
        c = chans[lvl]
        for i in range(3):
            total += rb(ch + skips.pop(), c, size[lvl]) + (attn(c, size[lvl]) if i == 0 else 0)
            ch = c
        if lvl:
            total += 9 * size[lvl - 1] * c * c
    return total


@pytest.mark.parametrize("factory, swin", [(unet, False), (swin_unet, True)])
@pytest.mark.parametrize("res", [64, 1024])
def test_macs_match_closed_form_on_meta(factory, swin, res):
    model = on_meta(factory)
    x = torch.empty(1, 3, res, res, device="meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x, torch.zeros(1, dtype=torch.long, device="meta"), x)
    macs = counter.get_total_flops() // 2
    assert macs == closed_form_macs(res, swin)
    if res == 64:  # docs/baselines.md §6.2 measured anchors, GMACs
        assert round(macs / 1e9, 3) == (50.662 if swin else 53.957)


# ---- forward ----

@pytest.mark.parametrize("factory, kw", [(unet, SMALL), (swin_unet, SMALL_SWIN)])
def test_forward_shape_dtype_lq_and_mask(factory, kw):
    torch.manual_seed(0)
    model = factory(**kw).eval()
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([3, 11])
    lq = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        y = model(x, t, lq)
        assert y.shape == (2, 3, 64, 64) and y.dtype == torch.float32 and torch.isfinite(y).all()
        up = F.interpolate(lq, size=(64, 64), mode="bicubic", align_corners=False)
        torch.testing.assert_close(model(x, t, up), y, rtol=0, atol=0)  # lq smaller than x is upsampled bicubically
        torch.testing.assert_close(model(x, t, lq, mask=torch.ones(2, 8, 8)), y, rtol=0, atol=0)  # mask ignored
        yb = model(x.bfloat16(), t, lq.bfloat16())
        assert yb.dtype == torch.bfloat16  # output in the input dtype


def test_swin_rectangles_and_shift_clamp():
    torch.manual_seed(0)
    model = swin_unet(model_channels=32, swin_embed_dim=32, channel_mult=(1, 2)).eval()  # multiple 2·8 = 16
    assert model.input_multiple == 16
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 32), torch.tensor([1]), torch.randn(1, 3, 16, 32)).shape == (1, 3, 16, 32)
        assert model(torch.randn(1, 3, 32, 48), torch.tensor([1]), torch.randn(1, 3, 8, 12)).shape == (1, 3, 32, 48)


@pytest.mark.parametrize("factory, kw, bad", [
    (unet, SMALL, (60, 64)), (unet, SMALL, (64, 36)),
    (swin_unet, SMALL_SWIN, (96, 64)), (swin_unet, SMALL_SWIN, (64, 72)),
])
def test_bad_resolution_raises_value_error(factory, kw, bad):
    model = on_meta(factory, **kw)
    x = torch.empty(1, 3, *bad, device="meta")
    with pytest.raises(ValueError, match=rf"multiples of {model.input_multiple}, got {bad[0]}x{bad[1]}") as e:
        model(x, torch.zeros(1, dtype=torch.long, device="meta"), x)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError):
        resolve(factory.__name__.replace("_", "-")).check_resolution(*bad)


# ---- behaviour at initialisation ----

def test_zero_initialised_blocks_are_identities():
    torch.manual_seed(0)
    x, emb = torch.randn(2, 64, 8, 8), torch.randn(2, 128)
    torch.testing.assert_close(AttentionBlock(64, 32)(x), x, rtol=0, atol=0)  # proj_out is zero
    torch.testing.assert_close(ResBlock(64, 64, 128)(x, emb), x, rtol=0, atol=0)  # out conv is zero
    rb = ResBlock(64, 96, 128)
    torch.testing.assert_close(rb(x, emb), rb.skip_connection(x), rtol=0, atol=0)
    head = unet(**SMALL).out[-1]
    assert head.weight.abs().sum() > 0  # the output conv is not zero-initialised


# ---- attention against explicit oracles ----

def test_unet_attention_matches_explicit_legacy_layout():
    torch.manual_seed(0)
    blk = AttentionBlock(64, 32)
    torch.nn.init.normal_(blk.proj_out.weight)
    x = torch.randn(2, 64, 6, 5)
    qkv = blk.qkv(blk.norm(x).flatten(2))  # (B, 3C, T) through the Conv1d itself
    q, k, v = rearrange(qkv, "b (h three d) t -> three b h t d", three=3, h=2)  # per-head [q_h | k_h | v_h]
    w = torch.softmax(q @ k.transpose(-1, -2) / 32 ** 0.5, dim=-1)
    out = blk.proj_out(rearrange(w @ v, "b h t d -> b (h d) t"))
    torch.testing.assert_close(blk(x), x + out.reshape(x.shape), rtol=1e-5, atol=1e-5)


def explicit_bias(table: torch.Tensor, window: int) -> torch.Tensor:
    """(heads, N, N) relative-position bias by loops: table[(Δrow + w-1)·(2w-1) + Δcol + w-1]."""
    n = window * window
    idx = torch.empty(n, n, dtype=torch.long)
    for i in range(n):
        for j in range(n):
            dr, dc = i // window - j // window, i % window - j % window
            idx[i, j] = (dr + window - 1) * (2 * window - 1) + dc + window - 1
    return table[idx].permute(2, 0, 1)


def explicit_window_attention(attn: WindowAttention, win: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(q kᵀ/√d + bias + mask) v per window; win (B, nh, nw, N, C), mask (nW, N, N) or None."""
    nh, c = win.shape[1], win.shape[-1]
    q, k, v = rearrange(attn.qkv(win), "b r s n (three h d) -> three b (r s) h n d", three=3, h=attn.heads)
    logits = q @ k.transpose(-1, -2) / (c // attn.heads) ** 0.5 + explicit_bias(attn.relative_position_bias_table, 8)
    if mask is not None:
        logits = logits + mask[None, :, None]
    out = rearrange(torch.softmax(logits, dim=-1) @ v, "b (r s) h n d -> b r s n (h d)", r=nh)
    return attn.proj(out)


@pytest.mark.parametrize("shift, standard", [(0, False), (4, False), (4, True)])
def test_sdpa_window_attention_matches_explicit_softmax(shift, standard):
    torch.manual_seed(0)
    attn = WindowAttention(64, 2, 8)
    torch.nn.init.normal_(attn.relative_position_bias_table)  # make the bias matter
    win = torch.randn(2, 3, 4, 64, 64)  # a 24×32 map: 3×4 windows
    mask = shift_window_mask(24, 32, 8, shift, standard) if shift else None
    with torch.no_grad():
        torch.testing.assert_close(attn(win, shift, standard), explicit_window_attention(attn, win, mask),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("standard", [False, True])
def test_swin_block_matches_explicit_roll_partition(standard):
    torch.manual_seed(0)
    blk = SwinTransformerBlock(64, 2, 8, 4, standard_shift_mask=standard)
    torch.nn.init.normal_(blk.attn.relative_position_bias_table)
    x = torch.randn(2, 64, 16, 24)
    y = torch.roll(blk.norm1(x), (-4, -4), dims=(2, 3))
    win = rearrange(y, "b c (r i) (s j) -> b r s (i j) c", i=8, j=8)
    out = explicit_window_attention(blk.attn, win, shift_window_mask(16, 24, 8, 4, standard))
    y = torch.roll(rearrange(out, "b r s (i j) c -> b c (r i) (s j)", i=8), (4, 4), dims=(2, 3))
    ref = x + y
    ref = ref + blk.mlp(blk.norm2(ref))
    with torch.no_grad():
        torch.testing.assert_close(blk(x), ref, rtol=1e-5, atol=1e-5)
        # an 8×16 map is no larger than a window on one side: the shift is clamped to 0, as in the reference
        x8 = torch.randn(1, 64, 8, 16)
        torch.testing.assert_close(blk(x8), _unshifted(blk)(x8), rtol=0, atol=0)


def _unshifted(blk: SwinTransformerBlock) -> SwinTransformerBlock:
    twin = SwinTransformerBlock(64, 2, 8, 0)
    twin.load_state_dict(blk.state_dict())
    return twin


def test_shift_mask_masked_entry_counts():
    """Spec §3.3 on a 16×16 map, window 8, shift 4 (2×2 windows in row-major order).

    A count is the number of (query, key) pairs of one window's 64×64 mask that hold -100: the mask is shared by
    all heads, so heads are not counted.  Reference mask: the bottom windows hold rows of 2 labels (4 rows each),
    32·32·2 = 2048.  Standard mask: right/bottom windows split in two halves (2048); the corner window has four
    16-token quadrants, 64² - 4·16² = 3072.
    """
    count = lambda m: (m == -100).sum(dim=(1, 2)).tolist()
    assert count(shift_window_mask(16, 16, 8, 4)) == [0, 0, 2048, 2048]
    assert count(shift_window_mask(16, 16, 8, 4, standard=True)) == [0, 2048, 2048, 3072]
    assert set(shift_window_mask(16, 16, 8, 4).unique().tolist()) == {0.0, -100.0}
