"""Swin-U-Net (ResShift's real-SR network at the Figure-5 size): the U-Net skeleton with Swin layers as attention.

Spec: docs/baselines.md §3.  Every global AttentionBlock of the U-Net becomes a ``BasicLayer``: 1×1 conv
C → E, two Swin blocks (shift 0, then shift window/2), 1×1 conv E → C, with no residual around the layer.  The
model works channel-first throughout and uses GroupNorm where Swin has LayerNorm.

Input multiple: the windows (8×8) must tile the feature map at the coarsest level, 1/8 of the input after three
downsamples, so H and W must be multiples of 2**3 · 8 = 64 (docs/baselines.md §8: the reference does not pad windows).

Resolution-dependent state is built lazily: the relative-position index and the shift-mask patterns are cached per
window/shift/device on first use, never stored as module buffers.  The shift is clamped to 0 where the feature map's
smaller side is ≤ the window, as the reference does at construction for its ``img_size`` (so this model equals the
reference built with ``image_size`` = the input size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from baselines.unet import UNetModel, group_norm

__all__ = [
    "shift_window_mask", "relative_position_index", "WindowAttention", "ConvMlp", "SwinTransformerBlock",
    "BasicLayer", "swin_unet", "SWIN_UNET_CFG",
]

MASK_VALUE = -100.0
_CACHE: dict[tuple, torch.Tensor] = {}


def _cached(key: tuple, like: torch.Tensor, build) -> torch.Tensor:
    """``build()`` moved to ``like``'s device, cached per key and device (uncached for fake or subclass tensors)."""
    if type(like) is not torch.Tensor:  # FakeTensor, tracing, ...: build in the active mode, never cache
        return build().to(like.device)
    key = (*key, str(like.device))
    if key not in _CACHE:
        with torch.inference_mode(False), torch.no_grad():
            _CACHE[key] = build().to(like.device)
    return _CACHE[key]


def shift_window_mask(height: int, width: int, window: int, shift: int, standard: bool = False) -> torch.Tensor:
    """Additive mask (nW, N, N), 0 or -100, of the shifted-window partition of a height×width map (row-major windows).

    Default: the reference's mask, whose regions split the H axis only (rows [0, H-w), [H-w, H-s), [H-s, H)).
    ``standard=True``: the standard Swin mask, the same three bands on both axes (nine regions).
    """
    labels = torch.zeros(height, width)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(bands):
        if standard:
            for j, cols in enumerate(bands):
                labels[rows, cols] = 3 * i + j
        else:
            labels[rows, :] = i
    win = rearrange(labels, "(nh wh) (nw ww) -> (nh nw) (wh ww)", wh=window, ww=window)
    return (win[:, :, None] != win[:, None, :]).float() * MASK_VALUE


def mask_patterns(window: int, shift: int, standard: bool) -> torch.Tensor:
    """The four distinct per-window masks (2, 2, N, N), indexed [last window row?, last window column?].

    Only windows in the last row or column of windows straddle the cyclic wrap-around, so a 2×2-window map holds
    every pattern that occurs at any resolution.
    """
    n = window * window
    return shift_window_mask(2 * window, 2 * window, window, shift, standard).reshape(2, 2, n, n)


def relative_position_index(window: int) -> torch.Tensor:
    """(N, N) index into the (2w-1)² bias table: (row offset + w-1)·(2w-1) + column offset + w-1."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + window - 1
    return rel[0] * (2 * window - 1) + rel[1]


class WindowAttention(nn.Module):
    """Multi-head attention inside w×w windows with a learned relative-position bias, through SDPA."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        # Swin's trunc_normal_(std=0.02) truncates at ±2, i.e. 100σ: a plain normal, which also works on fake tensors
        nn.init.normal_(self.relative_position_bias_table, std=0.02)

    def relative_bias(self, like: torch.Tensor) -> torch.Tensor:
        """Bias (heads, N, N) gathered from the table with the cached index."""
        idx = _cached(("relidx", self.window), like, lambda: relative_position_index(self.window))
        return rearrange(self.relative_position_bias_table[idx], "i j h -> h i j")

    def forward(self, x: torch.Tensor, shift: int = 0, standard_mask: bool = False) -> torch.Tensor:
        """x (B, nh, nw, N, C) windows → same shape; a shift > 0 adds the shifted-window mask."""
        b, nh, nw, n, c = x.shape
        qkv = self.qkv(x)
        bias = self.relative_bias(x).to(qkv.dtype)[None]
        if not shift:
            groups = [(slice(None), slice(None), bias)]
        else:
            pat = _cached(("mask", self.window, shift, standard_mask), x,
                          lambda: mask_patterns(self.window, shift, standard_mask)).to(qkv.dtype)
            # Windows sharing a mask pattern go through one SDPA call, with a broadcast (1, heads, N, N) mask:
            # no per-window mask is materialised.  The reference mask depends on the window row only, so two
            # groups of whole window rows suffice (views of qkv for batch 1); the standard mask needs four.
            row, col = (slice(0, -1), slice(-1, None)), (slice(0, -1), slice(-1, None))
            if standard_mask:
                groups = [(row[i], col[j], bias + pat[i, j]) for i in range(2) for j in range(2)]
            else:
                groups = [(row[i], slice(None), bias + pat[i, 0]) for i in range(2)]
        out = qkv.new_empty(b, nh, nw, n, c) if len(groups) > 1 else None
        for rows, cols, attn_mask in groups:
            part = qkv[:, rows, cols]
            if part.numel() == 0:
                continue
            gh, gw = part.shape[1:3]
            q, k, v = rearrange(part, "b r c n (three h d) -> three (b r c) h n d", three=3, h=self.heads)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # scale 1/sqrt(head_dim)
            o = rearrange(o, "(b r c) h n d -> b r c n (h d)", b=b, r=gh, c=gw)
            if out is None:
                out = o
            else:
                out[:, rows, cols] = o
        return self.proj(out)


class ConvMlp(nn.Module):
    """1×1 conv C → ratio·C → GELU (exact) → 1×1 conv → C, channel-first."""

    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """x + WindowAttention(GN x) over (shifted) windows, then x + MLP(GN x); channel-first (B, C, H, W)."""

    def __init__(self, dim: int, heads: int, window: int = 8, shift: int = 0, mlp_ratio: float = 4.0,
                 standard_shift_mask: bool = False):
        super().__init__()
        self.window, self.shift, self.standard_shift_mask = window, shift, standard_shift_mask
        self.norm1 = group_norm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = group_norm(dim)
        self.mlp = ConvMlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ws = self.window
        if h % ws or w % ws:
            raise ValueError(f"SwinTransformerBlock: feature map {h}x{w} is not tiled by {ws}x{ws} windows")
        shift = self.shift if min(h, w) > ws else 0  # the reference's clamp for maps no larger than a window
        y = self.norm1(x)
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(2, 3))
        y = rearrange(y, "b c (nh wh) (nw ww) -> b nh nw (wh ww) c", wh=ws, ww=ws)
        y = self.attn(y, shift, self.standard_shift_mask)
        y = rearrange(y, "b nh nw (wh ww) c -> b c (nh wh) (nw ww)", wh=ws, ww=ws)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(2, 3))
        x = x + y
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    """1×1 conv C → E, ``depth`` Swin blocks (shift 0 / window//2 alternating), 1×1 conv E → C; no residual."""

    def __init__(self, channels: int, embed_dim: int = 192, depth: int = 2, heads: int = 6, window: int = 8,
                 mlp_ratio: float = 4.0, standard_shift_mask: bool = False):
        super().__init__()
        self.patch_embed = nn.Conv2d(channels, embed_dim, 1)
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(embed_dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio,
                                 standard_shift_mask)
            for i in range(depth)
        ])
        self.patch_unembed = nn.Conv2d(embed_dim, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.patch_unembed(x)


SWIN_UNET_CFG = dict(  # the Figure-5 skeleton; the Swin layer's defaults are the factory's keywords
    in_channels=3, out_channels=3, model_channels=160, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
    attention_levels=(0, 1, 2, 3), dropout=0.0,
)


def swin_unet(num_head_channels: int = 32, swin_embed_dim: int = 192, swin_depth: int = 2, window_size: int = 8,
              mlp_ratio: float = 4.0, standard_shift_mask: bool = False, **kwargs) -> UNetModel:
    """ADM U-Net with Swin window-attention layers (ResShift real-SR net, QDM Figure 5; 118,593,583 parameters)."""
    if swin_embed_dim % num_head_channels:
        raise ValueError(f"swin_embed_dim {swin_embed_dim} is not a multiple of num_head_channels {num_head_channels}")
    heads = swin_embed_dim // num_head_channels

    def layer(ch: int) -> BasicLayer:
        return BasicLayer(ch, swin_embed_dim, swin_depth, heads, window_size, mlp_ratio, standard_shift_mask)

    cfg = {**SWIN_UNET_CFG, **kwargs}
    levels = len(cfg["channel_mult"])
    return UNetModel(layer, input_multiple=2 ** (levels - 1) * window_size, name="swin-unet", **cfg)
