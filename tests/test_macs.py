"""MAC counting against hand-computed oracles: single layers, attention, closed forms, QDM's affine window cost."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qdm_bench.measure.macs import count_macs, count_module_macs, fvcore_breakdown, mac_breakdown, sdpa_macs
from qdm_bench.registry import ModelError, create_model, list_models, resolve


class _Sdpa(nn.Module):
    def forward(self, q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_linear_macs_are_tokens_in_out(device):
    layer = nn.Linear(48, 80, device=device)
    x = torch.randn(3, 17, 48, device=device)
    total, attn = count_module_macs(layer, x)
    assert total == 3 * 17 * 48 * 80 and attn == 0


@pytest.mark.parametrize("groups,stride", [(1, 1), (4, 1), (1, 2)])
def test_conv_macs_are_pixels_k2_cin_cout_over_groups(groups, stride):
    conv = nn.Conv2d(16, 24, 3, stride=stride, padding=1, groups=groups, device="meta")
    x = torch.empty(2, 16, 20, 28, device="meta")
    total, _ = count_module_macs(conv, x)
    out_pixels = 2 * (20 // stride) * (28 // stride)
    assert total == out_pixels * 9 * 16 * 24 // groups


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_sdpa_is_counted_in_total_and_attention(device):
    """b·h·n_q·n_k·(d_qk + d_v), on meta (decomposed) and on real CPU tensors (flash kernel, safety-net formula)."""
    b, h, nq, nk, d, dv = 2, 3, 40, 24, 16, 16
    q = torch.randn(b, h, nq, d, device=device)
    k = torch.randn(b, h, nk, d, device=device)
    v = torch.randn(b, h, nk, dv, device=device)
    total, attn = count_module_macs(_Sdpa(), q, k, v)
    expected = b * h * nq * nk * (d + dv)
    assert attn == expected
    assert total == expected, "attention must never be counted as zero"
    assert sdpa_macs(q.shape, k.shape, v.shape) == expected


def test_sdpa_with_additive_mask_counts_products_only():
    q = torch.empty(5, 2, 64, 8, device="meta")
    mask = torch.empty(5, 1, 64, 64, device="meta")
    total, attn = count_module_macs(_Sdpa(), q, q, q, mask)
    assert total == attn == 5 * 2 * 64 * 64 * 16


def _dit_closed_form(res, patch, dim, depth, c_in=6, c_out=3):
    """docs/baselines.md §6.1: T·D·C_in·p² + 256·D + D² + L·(12·T·D² + 2·T²·D + 6·D²) + 2·D² + T·D·p²·C_out."""
    T = (res // patch) ** 2
    D, L = dim, depth
    return T * D * c_in * patch**2 + 256 * D + D * D + L * (12 * T * D * D + 2 * T * T * D + 6 * D * D) \
        + 2 * D * D + T * D * patch**2 * c_out


@pytest.mark.parametrize("name,res,dim,depth,patch", [
    ("dit-s/8", 1024, 384, 12, 8), ("dit-b/4", 256, 768, 12, 4), ("dit-l/8", 512, 1024, 24, 8),
])
def test_dit_matches_closed_form(name, res, dim, depth, patch):
    mc = count_macs(name, res)
    assert mc.macs == _dit_closed_form(res, patch, dim, depth)
    T = (res // patch) ** 2
    assert mc.attention_macs == depth * 2 * T * T * dim


@pytest.mark.parametrize("name,res,gmacs", [
    ("unet", 64, 53.957), ("unet", 128, 361.946), ("unet", 256, 3786.157), ("swin-unet", 64, 50.662),
    ("swin-unet", 256, 810.416),
])
def test_unet_family_matches_spec_anchors(name, res, gmacs):
    """docs/baselines.md §6.2 anchors (reference networks counted with FlopCounterMode on meta), to the printed digit."""
    assert round(count_macs(name, res).macs / 1e9, 3) == gmacs


def test_batch_scales_linearly():
    one, four = count_macs("dit-s/8", 64), count_macs("dit-s/8", 64, batch=4)
    assert four.macs == 4 * one.macs and four.macs_per_image == one.macs


def test_macs_per_sr_is_steps_times_evaluation():
    mc = count_macs("qdm-t", 64)
    assert mc.num_steps == resolve("qdm-t").num_steps == 15
    assert mc.macs_per_sr == 15 * mc.macs + mc.extra_sr_macs


ATTENTION_FREE = ("dualdomain",)  # families without attention layers (the dual-domain U-Net is convolutions only)


@pytest.mark.parametrize("name", [n for n in list_models() if resolve(n).family not in ATTENTION_FREE])
def test_every_attention_model_has_nonzero_attention_macs(name):
    info = resolve(name)
    with torch.device("meta"):
        res = getattr(create_model(name), "input_multiple", info.multiple)
    res = max(res, 64)
    mc = count_macs(name, res)
    assert mc.macs > 0 and mc.attention_macs > 0 and mc.attention_calls > 0
    assert mc.attention_macs < mc.macs


def _k_window_mask(k, grid_windows=8, window=8):
    """Patch-grid mask (1, 64, 64) of qdm-t at 128² with exactly the first k of its 8×8 windows set."""
    sel = torch.zeros(grid_windows * grid_windows, dtype=torch.bool)
    sel[:k] = True
    sel = sel.view(grid_windows, grid_windows)
    return sel.repeat_interleave(window, 0).repeat_interleave(window, 1)[None]


def test_qdm_macs_are_affine_in_selected_windows():
    """docs/qdm.md §9: with one chunk per forward, k, 2k and 3k windows have equal MAC differences."""
    counts = [count_macs("qdm-t", 128, mask=_k_window_mask(k), chunk_size=4096) for k in (5, 10, 15)]
    assert [c.active_windows for c in counts] == [5, 10, 15]
    d1, d2 = counts[1].macs - counts[0].macs, counts[2].macs - counts[1].macs
    assert d1 == d2 > 0
    full = count_macs("qdm-t", 128, chunk_size=4096)
    assert full.active_windows == full.total_windows == 64
    assert full.macs == counts[0].macs + (64 - 5) * d1 // 5
    assert count_macs("qdm-t", 128, mask=torch.ones(1, 64, 64, dtype=torch.bool), chunk_size=4096).macs == full.macs


def test_sparse_counts_less_than_dense():
    mask = _k_window_mask(16)
    assert count_macs("qdm-t", 128, mask=mask).macs < count_macs("qdm-t", 128).macs


def test_bad_resolution_is_refused_before_counting():
    with pytest.raises(ModelError, match="multiples? of 64"):
        count_macs("swin-unet", 96)
    with pytest.raises(ModelError, match="unknown model"):
        count_macs("dit-q/8", 64)


def test_meta_breakdown_is_consistent_with_total():
    rows = mac_breakdown("dit-s/8", 64, depth=2)
    total = count_macs("dit-s/8", 64).macs
    root = [r for r in rows if r["depth"] == 0]
    assert len(root) == 1 and root[0]["macs"] == total
    assert sum(r["macs"] for r in rows if r["depth"] == 1) == total


def test_fvcore_breakdown_includes_attention():
    """fvcore with the SDPA handle agrees with the meta count up to the norms it also prices (< 1 %)."""
    table, total = fvcore_breakdown("dit-s/8", 32)
    exact = count_macs("dit-s/8", 32).macs
    assert "blocks" in table
    assert exact <= total < 1.01 * exact
