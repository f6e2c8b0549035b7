"""Transformer building blocks shared by QDM and the DiT baselines (adaLN-Zero DiT recipe, SDPA attention)."""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = [
    "modulate", "timestep_frequencies", "timestep_embedding", "sincos_pos_embed_2d", "TimestepEmbedder", "Attention", "CrossAttention",
    "Mlp", "DiTBlock", "FinalLayer", "PatchEmbed", "DiTStream", "condition_on_lq", "adaln", "layer_norm",
    "init_dit_weights", "unpatchify",
]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x·(1 + scale) + shift, with (B, d) shift/scale broadcast over tokens."""
    return x * (1 + scale.unsqueeze(-2)) + shift.unsqueeze(-2)


@lru_cache(maxsize=8)
def timestep_frequencies(half: int, max_period: float = 10000.0) -> torch.Tensor:
    """The float32 frequencies exp(-ln(max_period)·i/half), i < half, correctly rounded (the same on every machine)."""
    # The exponent is formed in float32 as the DiT recipe does; exp is then taken in float64 and rounded once, so the
    # table does not depend on the platform's float32 exp (which differs by one ulp in a few entries across machines
    # and devices; docs/qdm.md, "Timestep frequencies").
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device="cpu") / half
    return torch.exp(exponent.double()).float()


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding laid out [cos | sin] with frequencies exp(-ln(max_period)·i/(dim/2)), t used as float."""
    half = dim // 2
    freqs = timestep_frequencies(half, max_period).to(t.device)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


@lru_cache(maxsize=64)
def _sincos_table(gh: int, gw: int, dim: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    if dim % 4:
        raise ValueError(f"sin-cos positional embedding needs a hidden size divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                                indexing="ij")

    def half(pos: torch.Tensor) -> torch.Tensor:
        out = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    # MAE recipe: the first half of the channels encodes the column (w) index, the second half the row (h) index.
    table = torch.cat([half(cols), half(rows)], dim=1).to(torch.float32)
    return table.to(device=device, dtype=dtype)


def sincos_pos_embed_2d(gh: int, gw: int, dim: int, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fixed 2-D sin-cos table (gh·gw, dim) for a row-major token grid, built once per grid size and device."""
    # The table is computed in float64 and rounded to float32 like the reference's numpy construction, so at the
    # build size it equals the reference table; other dtypes are cast from that float32 table.
    return _sincos_table(gh, gw, dim, str(torch.device(device)), dtype)


class TimestepEmbedder(nn.Module):
    """Embeds integer diffusion steps: 256-dim sinusoid → Linear → SiLU → Linear."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class Attention(nn.Module):
    """Multi-head self-attention with a fused [q | k | v] projection and scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n e -> b n (h e)"))


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from x, keys/values from a context projected by one [k | v] Linear."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def project_context(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of a context (B, T, d), as (B, heads, T, head_dim) each; computed once and reused."""
        k, v = rearrange(self.kv(context), "b n (two h e) -> two b h n e", two=2, h=self.heads)
        return k, v

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        q = rearrange(self.q(x), "b n (h e) -> b h n e", h=self.heads)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(rearrange(out, "b h n e -> b n (h e)"))


class Mlp(nn.Module):
    """Linear → GELU(tanh) → Linear."""

    def __init__(self, dim: int, ratio: float = 4.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def adaln(dim: int, n: int) -> nn.Sequential:
    """adaLN modulation head SiLU → Linear(d → n·d); zero-initialised by :func:`init_dit_weights`."""
    return nn.Sequential(nn.SiLU(), nn.Linear(dim, n * dim))


def layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm without affine parameters, eps 1e-6 (the DiT convention)."""
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


class DiTBlock(nn.Module):
    """DiT block with adaLN-Zero: x + gate·Attn(mod(LN x)), then x + gate·MLP(mod(LN x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.norm2 = layer_norm(dim), layer_norm(dim)
        self.attn = Attention(dim, heads)
        self.mlp = Mlp(dim, mlp_ratio)
        self.adaLN_modulation = adaln(dim, 6)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(-2) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(-2) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """LN → adaLN modulate (shift, scale) → Linear(d → patch²·C_out)."""

    def __init__(self, dim: int, patch: int, out_channels: int):
        super().__init__()
        self.norm_final = layer_norm(dim)
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = adaln(dim, 2)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class PatchEmbed(nn.Module):
    """Conv patch embedding (kernel = stride = patch) with an optional LayerNorm on the tokens."""

    def __init__(self, in_channels: int, dim: int, patch: int, norm: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim, eps=1e-5) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(rearrange(self.proj(x), "b d h w -> b (h w) d"))


class DiTStream(nn.Module):
    """A DiT over patch tokens: returns (tokens after the last block, unpatchified prediction).

    QDM's upstream stream and the DiT baselines.  ``extra_cond`` (B, d) is added to the timestep embedding
    (the class-conditional DiT's label embedding).
    """

    def __init__(self, in_channels: int, out_channels: int, patch: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float):
        super().__init__()
        self.patch, self.dim = patch, dim
        self.x_embedder = PatchEmbed(in_channels, dim, patch)
        self.t_embedder = TimestepEmbedder(dim)
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(dim, patch, out_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor,
                extra_cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        tokens = self.x_embedder(x)
        tokens = tokens + sincos_pos_embed_2d(gh, gw, self.dim, tokens.device, tokens.dtype)
        c = self.t_embedder(t)
        if extra_cond is not None:
            c = c + extra_cond
        for block in self.blocks:
            tokens = block(tokens, c)
        return tokens, unpatchify(self.final_layer(tokens, c), gh, gw, self.patch)


def condition_on_lq(x: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    """Concatenate x with the LR condition (after x on the channel axis), bicubic-upsampled when smaller."""
    if lq.shape[-2:] != x.shape[-2:]:
        if lq.shape[-2] > x.shape[-2] or lq.shape[-1] > x.shape[-1]:
            raise ValueError(f"lq {tuple(lq.shape)} is larger than x {tuple(x.shape)}; pass the LR image")
        lq = F.interpolate(lq, size=x.shape[-2:], mode="bicubic", align_corners=False)
    return torch.cat([x, lq.to(x.dtype)], dim=1)


def unpatchify(tokens: torch.Tensor, gh: int, gw: int, patch: int) -> torch.Tensor:
    """(B, gh·gw, p·p·C) row-major tokens laid out (patch row, patch col, channel) → image (B, C, gh·p, gw·p)."""
    return rearrange(tokens, "b (gh gw) (p1 p2 c) -> b c (gh p1) (gw p2)", gh=gh, gw=gw, p1=patch, p2=patch)


def init_dit_weights(module: nn.Module) -> None:
    """DiT initialisation: xavier-uniform Linear/Conv weights, zero biases, N(0, 0.02) t-embedder, zero adaLN/final."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, TimestepEmbedder):
            nn.init.normal_(m.mlp[0].weight, std=0.02)
            nn.init.normal_(m.mlp[2].weight, std=0.02)
        elif isinstance(m, FinalLayer):
            for lin in (m.linear, m.adaLN_modulation[-1]):
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)
    for name, m in module.named_modules():
        if name.split(".")[-1].startswith("adaLN_modulation") and isinstance(m, nn.Sequential):
            nn.init.zeros_(m[-1].weight)
            nn.init.zeros_(m[-1].bias)
