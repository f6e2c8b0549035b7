"""ADM-style conv U-Net skeleton shared by the U-Net and Swin-U-Net baselines, and the Figure-5 U-Net (`unet`).

Spec: docs/baselines.md §2.  The skeleton (time-embedding MLP, scale-shift ResBlocks, down/up sampling, skip
bookkeeping, head) is parameterised by the attention layer placed after the first ResBlock of every attention level
on both paths and in the middle block.  The reference's ``attention_resolutions`` holds spatial sizes at its
constructed ``image_size``; here the model is resolution-agnostic, so ``attention_levels`` names the levels instead
(Figure 5: all four levels, i.e. ``(0, 1, 2, 3)``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from qdm.layers import timestep_embedding

__all__ = [
    "group_norm", "zero_module", "TimestepBlock", "TimestepSequential", "ResBlock", "Downsample", "Upsample",
    "AttentionBlock", "UNetModel", "unet", "UNET_CFG",
]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups, eps 1e-5, affine (no fp32 upcast, as in the QDM reference)."""
    return nn.GroupNorm(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero all parameters of ``module`` and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimestepBlock(nn.Module):
    """A block whose forward also takes the time embedding: forward(x, emb)."""


class TimestepSequential(nn.Sequential):
    """Sequential that passes the time embedding to the TimestepBlocks it holds."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class ResBlock(TimestepBlock):
    """GN→SiLU→conv, time scale-shift, GN→SiLU→dropout→zero conv, plus an identity or 1×1 skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * cout))
        self.out_layers = nn.Sequential(
            group_norm(cout), nn.SiLU(), nn.Dropout(dropout), zero_module(nn.Conv2d(cout, cout, 3, padding=1))
        )
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        scale, shift = rearrange(self.emb_layers(emb), "b (two c) -> two b c 1 1", two=2)
        h = self.out_layers[0](h) * (1 + scale) + shift
        return self.skip_connection(x) + self.out_layers[1:](h)


class Downsample(nn.Module):
    """Stride-2 conv3×3, C → C."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest ×2 upsampling, then conv3×3 C → C."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class AttentionBlock(nn.Module):
    """Global self-attention over all pixels: x + proj_out(SDPA(qkv(GN x))), legacy per-head [q_h | k_h | v_h]."""

    def __init__(self, channels: int, head_channels: int = 32):
        super().__init__()
        if channels % head_channels:
            raise ValueError(f"AttentionBlock: {channels} channels is not a multiple of head size {head_channels}")
        self.heads = channels // head_channels
        self.norm = group_norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # The 1×1 Conv1d weights applied as a Linear on (B, T, C) tokens: q, k, v then have unit stride on the head
        # dimension, which the fused SDPA kernels need.  Same parameters, same MACs as the reference's Conv1d.
        tokens = rearrange(self.norm(x), "b c h w -> b (h w) c")
        qkv = F.linear(tokens, self.qkv.weight[..., 0], self.qkv.bias)
        q, k, v = rearrange(qkv, "b t (h three d) -> three b h t d", three=3, h=self.heads)
        out = rearrange(F.scaled_dot_product_attention(q, k, v), "b h t d -> b t (h d)")  # scale 1/sqrt(d)
        out = F.linear(out, self.proj_out.weight[..., 0], self.proj_out.bias)
        return x + rearrange(out, "b (h w) c -> b c h w", h=h, w=w)


def _per_level(value: int | Sequence[int], levels: int) -> list[int]:
    """Broadcast an int to one value per level, or check a per-level sequence."""
    vals = [value] * levels if isinstance(value, int) else list(value)
    if len(vals) != levels:
        raise ValueError(f"num_res_blocks needs one value per level ({levels}), got {value!r}")
    return vals


class UNetModel(nn.Module):
    """ADM conv U-Net conditioned on an LR image (concatenated after x_t), with a pluggable attention layer."""

    def __init__(
        self,
        attn_layer: Callable[[int], nn.Module],
        in_channels: int = 3,
        lq_channels: int = 3,
        out_channels: int = 3,
        model_channels: int = 160,
        channel_mult: Sequence[int] = (1, 2, 2, 4),
        num_res_blocks: int | Sequence[int] = 2,
        attention_levels: Sequence[int] = (0, 1, 2, 3),
        dropout: float = 0.0,
        input_multiple: int | None = None,
        name: str = "unet",
    ):
        super().__init__()
        levels = len(channel_mult)
        nrb = _per_level(num_res_blocks, levels)
        self.name = name
        self.model_channels = model_channels
        self.input_multiple = input_multiple or 2 ** (levels - 1)
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(
            nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )

        ch = model_channels
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(in_channels + lq_channels, ch, 3, padding=1))])
        skips = [ch]
        for level, mult in enumerate(channel_mult):
            for i in range(nrb[level]):
                layers: list[nn.Module] = [ResBlock(ch, mult * model_channels, emb_dim, dropout)]
                ch = mult * model_channels
                if i == 0 and level in attention_levels:
                    layers.append(attn_layer(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skips.append(ch)
            if level != levels - 1:
                self.input_blocks.append(TimestepSequential(Downsample(ch)))
                skips.append(ch)

        self.middle_block = TimestepSequential(
            ResBlock(ch, ch, emb_dim, dropout), attn_layer(ch), ResBlock(ch, ch, emb_dim, dropout)
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(nrb[level] + 1):
                layers = [ResBlock(ch + skips.pop(), mult * model_channels, emb_dim, dropout)]
                ch = mult * model_channels
                if i == 0 and level in attention_levels:
                    layers.append(attn_layer(ch))
                if level and i == nrb[level]:
                    layers.append(Upsample(ch))
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(group_norm(ch), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))

    def check_resolution(self, height: int, width: int) -> None:
        """Raise ValueError unless H and W are positive multiples of ``input_multiple``."""
        m = self.input_multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise ValueError(f"{self.name} needs H and W to be positive multiples of {m}, got {height}x{width}")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, mask=None) -> torch.Tensor:
        """Prediction (B, C_out, H, W) from x_t (B, C, H, W), steps t (B,) and the LR image lq; ``mask`` is ignored."""
        b, _, height, width = x_t.shape
        self.check_resolution(height, width)
        if lq.shape[-2:] != x_t.shape[-2:]:
            lq = F.interpolate(lq, size=(height, width), mode="bicubic", align_corners=False)
        dtype = self.out[-1].weight.dtype
        t = t.expand(b) if t.ndim == 0 else t
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(dtype))
        h = torch.cat([x_t, lq], dim=1).to(dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h).to(x_t.dtype)


UNET_CFG = dict(  # the Figure-5 configuration (its attention heads: num_head_channels=32, the factory's default)
    in_channels=3, out_channels=3, model_channels=160, channel_mult=(1, 2, 2, 4), num_res_blocks=2,
    attention_levels=(0, 1, 2, 3), dropout=0.0,
)


def unet(num_head_channels: int = 32, **kwargs) -> UNetModel:
    """ADM U-Net with global attention at every level (QDM Figure 5; 115,984,323 parameters)."""
    return UNetModel(lambda ch: AttentionBlock(ch, num_head_channels), name="unet", **{**UNET_CFG, **kwargs})
