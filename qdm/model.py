"""The QDM dual-stream network (paper Fig. 2, Appendix A).

* **Upstream**: a DiT with patch ``up_patch`` (8) over the whole latent.  It yields the context tokens (after the last
  block, no final norm) and a coarse x₀ prediction.
* **Downstream**: patch ``down_patch`` (2) tokens in windows of ``window``×``window`` patches (8×8 = 16×16 latent
  pixels).  Each :class:`CrossAttnBlock` is window self-attention → MLP → cross-attention to the upstream tokens of the
  same image → MLP, with two adaLN-Zero modulations (the reference code's structure; it reproduces Table 5).

Sparse computation is split in two (``docs/qdm.md`` §0):

1. :meth:`QDM.plan` — data dependent: which windows of which image are computed, and how they are grouped into
   chunks.  A window is selected when any of its patch bits is 1.  The whole batch is planned with tensor ops.
2. :meth:`QDM.compute` — the network on a given plan.  It needs no mask values, so it runs on the meta device for
   MAC counting.

Windows are computationally independent (only window self-attention mixes tokens, and only inside a window), so the
result does not depend on ``chunk_size`` or on how windows are grouped.  A chunk holds pieces of several images
only when they have equal length, so each image's queries attend to that image's K/V without copying them per window.
The K/V of each image's upstream tokens are projected once per forward and reused by every chunk.
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field

import torch
from einops import rearrange
from torch import nn

from qdm.layers import (
    Attention, CrossAttention, DiTStream, FinalLayer, condition_on_lq, Mlp, PatchEmbed, TimestepEmbedder, adaln, init_dit_weights,
    layer_norm, modulate, sincos_pos_embed_2d,
)
from qdm.quadtree import active_windows, random_window_mask

__all__ = ["QDM", "WindowPlan", "CrossAttnBlock", "DownStream", "qdm_s", "qdm_b", "qdm_l", "qdm_t", "QDM_MODELS"]

BUILD_SIZE = 128  # the latent size of every shipped config; Table 5 counts the frozen tables at this size


class CrossAttnBlock(nn.Module):
    """Window self-attention → MLP → cross-attention to upstream tokens → MLP, with two adaLN-Zero modulations."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.norm2, self.norm3, self.norm4 = (layer_norm(dim) for _ in range(4))
        self.attn1 = Attention(dim, heads)
        self.mlp1 = Mlp(dim, mlp_ratio)
        self.adaLN_modulation1 = adaln(dim, 6)
        self.attn2 = CrossAttention(dim, heads)
        self.mlp2 = Mlp(dim, mlp_ratio)
        self.adaLN_modulation2 = adaln(dim, 6)

    def modulation(self, c: torch.Tensor) -> torch.Tensor:
        """The 12 modulation vectors (B, 12, d) of a timestep embedding; computed once per forward."""
        return torch.cat([self.adaLN_modulation1(c), self.adaLN_modulation2(c)], dim=-1).unflatten(-1, (12, -1))

    def forward(self, x: torch.Tensor, mod: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor],
                tokens_per_window: int) -> torch.Tensor:
        """x: (G, L·n, d) — L windows of n tokens of each of G images; mod: (G, 12, d); kv: that image's K/V."""
        s_msa, c_msa, g_msa, s_mlp1, c_mlp1, g_mlp1, s_mca, c_mca, g_mca, s_mlp2, c_mlp2, g_mlp2 = mod.unbind(1)
        h = rearrange(modulate(self.norm1(x), s_msa, c_msa), "g (l n) d -> (g l) n d", n=tokens_per_window)
        h = rearrange(self.attn1(h), "(g l) n d -> g (l n) d", g=x.shape[0])
        x = x + g_msa.unsqueeze(1) * h
        x = x + g_mlp1.unsqueeze(1) * self.mlp1(modulate(self.norm2(x), s_mlp1, c_mlp1))
        x = x + g_mca.unsqueeze(1) * self.attn2(modulate(self.norm3(x), s_mca, c_mca), kv)
        return x + g_mlp2.unsqueeze(1) * self.mlp2(modulate(self.norm4(x), s_mlp2, c_mlp2))


@dataclass
class WindowPlan:
    """Which windows are computed and in which chunks.

    ``steps`` is a list of (image indices (G,), window indices (G, L)): one chunk computes L windows of each of G
    images together (G·L ≤ chunk_size unless a single image piece is longer).  ``b_idx``/``w_idx`` list every
    selected window; ``grid`` is the window grid (rows, cols) and ``batch`` the batch size.
    """

    batch: int
    grid: tuple[int, int]
    b_idx: torch.Tensor
    w_idx: torch.Tensor
    steps: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    @property
    def n_selected(self) -> int:
        """Number of selected windows over the whole batch."""
        return int(self.b_idx.numel())

    @property
    def n_windows(self) -> int:
        """Number of windows in the batch."""
        return self.batch * self.grid[0] * self.grid[1]

    @property
    def density(self) -> float:
        """Fraction of windows selected."""
        return self.n_selected / self.n_windows

    @classmethod
    def from_selection(cls, selected: torch.Tensor, chunk_size: int) -> "WindowPlan":
        """Plan a (B, rows, cols) boolean window selection into chunks of at most ``chunk_size`` windows."""
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of windows, got {chunk_size}")
        batch, rows, cols = selected.shape
        flat = selected.reshape(batch, -1).cpu()
        b_idx, w_idx = flat.nonzero(as_tuple=True)  # sorted by image, then raster order
        counts = flat.sum(1)
        rank = torch.arange(b_idx.numel()) - (counts.cumsum(0) - counts)[b_idx]
        piece = rank // chunk_size  # each image is cut into pieces of ≤ chunk_size windows
        piece_len = torch.clamp(counts[b_idx] - piece * chunk_size, max=chunk_size)
        steps = []
        for length in piece_len.unique(sorted=True).flip(0).tolist():  # pieces of equal length can share a chunk
            sel = piece_len == length
            wins = w_idx[sel].reshape(-1, length)
            imgs = b_idx[sel].reshape(-1, length)[:, 0]
            per_chunk = max(1, chunk_size // length)
            steps += [(imgs[i:i + per_chunk], wins[i:i + per_chunk]) for i in range(0, len(imgs), per_chunk)]
        return cls(batch, (rows, cols), b_idx, w_idx, steps)


class DownStream(nn.Module):
    """Fine windowed stream: patch-``patch`` tokens in windows, cross-attending to the upstream tokens."""

    def __init__(self, in_channels: int, out_channels: int, patch: int, window: int, dim: int, depth: int,
                 heads: int, mlp_ratio: float):
        super().__init__()
        self.patch, self.window, self.dim, self.out_channels = patch, window, dim, out_channels
        self.x_embedder = PatchEmbed(in_channels, dim, patch, norm=True)
        self.t_embedder = TimestepEmbedder(dim)
        self.blocks = nn.ModuleList(CrossAttnBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.final_layer = FinalLayer(dim, patch, out_channels)

    def window_pos_embed(self, gh: int, gw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Global sin-cos table of the (gh, gw) patch grid laid out per window: (n_windows, window², d)."""
        table = sincos_pos_embed_2d(gh, gw, self.dim, device, dtype)
        return rearrange(table, "(wh i ww j) d -> (wh ww) (i j) d", wh=gh // self.window, i=self.window,
                         ww=gw // self.window, j=self.window)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, plan: WindowPlan) -> torch.Tensor:
        """Compute the planned windows; returns (B, n_windows, window², patch²·C_out), zeros where not computed."""
        B, _, H, W = x.shape
        p, w = self.patch, self.window
        n = w * w
        windows = rearrange(x, "b c (wh i) (ww j) -> b (wh ww) c i j", i=w * p, j=w * p)
        pos = None
        c = self.t_embedder(t)
        mods = [blk.modulation(c) for blk in self.blocks]
        kvs = [blk.attn2.project_context(context) for blk in self.blocks]  # once per forward, reused by all chunks
        out = x.new_zeros(B, windows.shape[1], n, p * p * self.out_channels)
        for imgs_cpu, wins_cpu in plan.steps:
            imgs, wins = imgs_cpu.to(x.device), wins_cpu.to(x.device)
            G, L = wins.shape
            first = int(imgs_cpu[0])  # a single image's K/V is a view, not a copy
            tokens = self.x_embedder(windows[imgs[:, None], wins].flatten(0, 1))  # (G·L, n, d): conv → LN
            if pos is None:
                pos = self.window_pos_embed(H // p, W // p, tokens.device, tokens.dtype)
            h = rearrange(tokens + pos[wins.flatten()], "(g l) n d -> g (l n) d", g=G)
            for blk, mod, (k, v) in zip(self.blocks, mods, kvs):
                kv = (k[imgs], v[imgs]) if G > 1 else (k[first:first + 1], v[first:first + 1])
                h = blk(h, mod[imgs], kv, n)
            pred = self.final_layer(h, c[imgs])
            out[imgs[:, None], wins] = rearrange(pred, "g (l n) e -> g l n e", n=n).to(out.dtype)
        return out

    def to_image(self, out: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        """(B, n_windows, window², patch²·C) window-major tokens → image (B, C, gh·patch, gw·patch)."""
        p, w = self.patch, self.window
        return rearrange(out, "b (wh ww) (i j) (p1 p2 c) -> b c (wh i p1) (ww j p2)", wh=gh // w, i=w, j=w, p1=p,
                         p2=p)


class QDM(nn.Module):
    """The QDM dual-stream denoiser: ``model(x_t, t, lq, mask=None)`` → x₀ prediction.

    ``mask`` is the patch-grid quadtree mask (B, H/down_patch, W/down_patch).  Without it the dense path runs: every
    window is computed and the downstream output is returned everywhere (training, validation, the Figure-5 test).
    With it, only windows with a set bit are computed and the result is merged per patch with the upstream prediction.
    """

    def __init__(self, dim: int = 384, depth: int = 6, heads: int = 6, up_patch: int = 8, down_patch: int = 2,
                 window: int = 8, in_channels: int = 3, lq_channels: int = 3, out_channels: int | None = None,
                 mlp_ratio: float = 4.0, chunk_size: int = 64):
        super().__init__()
        if dim % heads or dim % 4:
            raise ValueError(f"hidden size {dim} must be divisible by heads ({heads}) and by 4")
        self.dim, self.depth, self.heads = dim, depth, heads
        self.up_patch, self.down_patch, self.window = up_patch, down_patch, window
        self.in_channels, self.lq_channels = in_channels, lq_channels
        self.out_channels = out_channels or in_channels
        self.chunk_size = chunk_size
        cin = in_channels + lq_channels
        self.upstream = DiTStream(cin, self.out_channels, up_patch, dim, depth, heads, mlp_ratio)
        self.downstream = DownStream(cin, self.out_channels, down_patch, window, dim, depth, heads, mlp_ratio)
        init_dit_weights(self)

    @property
    def input_multiple(self) -> int:
        """H and W must be multiples of this (the upstream patch and the downstream window span)."""
        return _lcm(self.up_patch, self.down_patch * self.window)

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The authors' checkpoint layout → ours: their frozen sin-cos tables are checked against ours, then dropped."""
        state = dict(state)
        for key in ("upstream.x_embedder.pos_embed", "downstream.x_embedder.pos_embed"):
            if key not in state:
                continue
            theirs = state.pop(key).detach().to("cpu", torch.float32)
            side = math.isqrt(theirs[0].numel() // theirs.shape[-1])  # the square token grid the table was built for
            if side * side * theirs.shape[-1] != theirs[0].numel() or theirs.shape[-1] != self.dim:
                state[key] = theirs  # not a table of this model: left for the key check, which names it
                continue
            if key.startswith("upstream"):
                ours = sincos_pos_embed_2d(side, side, self.dim)[None]
            else:
                ours = self.downstream.window_pos_embed(side, side, torch.device("cpu"), torch.float32)[None]
            if ours.shape != theirs.shape or (ours - theirs).abs().max() > 1e-5:
                diff = "shape " + str(tuple(ours.shape)) if ours.shape != theirs.shape else \
                    f"max difference {(ours - theirs).abs().max().item():.3g}"
                raise ValueError(f"checkpoint key {key}: the frozen sin-cos table differs from ours ({diff}); the "
                                 "checkpoint was built with another window or patch size")
        return state

    def param_counts(self, build_size: int = BUILD_SIZE) -> dict[str, int]:
        """Learnable parameters and the Table-5 convention (plus both frozen sin-cos tables at ``build_size``²)."""
        learnable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        tables = ((build_size // self.up_patch) ** 2 + (build_size // self.down_patch) ** 2) * self.dim
        return {"learnable": learnable, "frozen": frozen, "table5": learnable + frozen + tables}

    # -- inputs -------------------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError for an input size the network cannot take."""
        H, W = x.shape[-2:]
        m = self.input_multiple
        if x.ndim != 4 or H % m or W % m or H == 0 or W == 0:
            raise ValueError(f"QDM needs x of shape (B, {self.in_channels}, H, W) with H and W multiples of {m}, "
                             f"got {tuple(x.shape)}; crop or pad to a multiple of {m}")

    def prepare_input(self, x: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        """Concatenate x with the LR condition, bicubic-upsampled to x's size when smaller."""
        self.check_input(x)
        return condition_on_lq(x, lq)

    # -- sparse split: plan (data dependent) and compute (shape only) ---------------------------------------------
    def window_grid(self, height: int, width: int) -> tuple[int, int]:
        """Number of downstream windows along (H, W) for an input of that size."""
        span = self.down_patch * self.window
        return height // span, width // span

    def mask_grid(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid (H/down_patch, W/down_patch) a mask for an input of that size lives on."""
        return height // self.down_patch, width // self.down_patch

    def random_mask(self, batch: int, height: int, width: int, density: float,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """A patch-grid mask selecting ``density`` of the windows at random (seeded by ``generator``)."""
        return random_window_mask(batch, *self.mask_grid(height, width), self.window, density, generator=generator)

    def plan(self, mask: torch.Tensor | None, batch: int, height: int, width: int,
             chunk_size: int | None = None) -> WindowPlan:
        """Select the windows to compute: those with any set bit of the patch mask, or all windows if mask is None."""
        rows, cols = self.window_grid(height, width)
        if mask is None:
            selected = torch.ones(batch, rows, cols, dtype=torch.bool)
        else:
            gh, gw = height // self.down_patch, width // self.down_patch
            if tuple(mask.shape) != (batch, gh, gw):
                raise ValueError(f"mask must be the patch grid (B, H/{self.down_patch}, W/{self.down_patch}) = "
                                 f"{(batch, gh, gw)}, got {tuple(mask.shape)}; build it with "
                                 f"qdm.quadtree.quadtree_mask(lr, ({gh}, {gw}), threshold)")
            selected = active_windows(mask.detach(), self.window)
        return WindowPlan.from_selection(selected, chunk_size or self.chunk_size)

    def compute(self, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor,
                plan: WindowPlan) -> tuple[torch.Tensor, torch.Tensor]:
        """Run both streams on a given plan: (downstream image, zeros outside planned windows; upstream prediction)."""
        xin = self.prepare_input(x, lq)
        context, up = self.upstream(xin, t)
        down = self.downstream(xin, t, context, plan)
        gh, gw = x.shape[-2] // self.down_patch, x.shape[-1] // self.down_patch
        return self.downstream.to_image(down, gh, gw), up

    def forward_planned(self, x_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, plan: WindowPlan,
                        mask: torch.Tensor | None = None, return_upstream: bool = False):
        """The forward after window selection: :meth:`compute` on ``plan``, then the per-patch merge with ``mask``.

        Free of data-dependent control flow, so it runs on the meta device (MAC counting, memory estimates).
        """
        down, up = self.compute(x_t, t, lq, plan)
        if mask is None:
            out = down
        else:  # per-patch merge: bit 1 takes the downstream value, bit 0 the upstream one
            bits = mask.to(torch.bool).repeat_interleave(self.down_patch, -2).repeat_interleave(self.down_patch, -1)
            out = torch.where(bits[:, None], down, up.to(down.dtype))
        return (out, up) if return_upstream else out

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, mask: torch.Tensor | None = None,
                chunk_size: int | None = None, return_upstream: bool = False):
        """x₀ prediction; with ``return_upstream`` also the coarse upstream prediction (for the Eq. 6 loss)."""
        self.check_input(x_t)
        B, _, H, W = x_t.shape
        plan = self.plan(mask, B, H, W, chunk_size)
        return self.forward_planned(x_t, t, lq, plan, mask, return_upstream)


def _lcm(a: int, b: int) -> int:
    import math

    return a * b // math.gcd(a, b)


def qdm_s(**kwargs) -> QDM:
    """QDM-S: 6+6 blocks, hidden 384, 6 heads (Table 5: 50.87 M)."""
    return QDM(**{"dim": 384, "depth": 6, "heads": 6, **kwargs})


def qdm_b(**kwargs) -> QDM:
    """QDM-B: 6+6 blocks, hidden 768, 12 heads (Table 5: 199.06 M)."""
    return QDM(**{"dim": 768, "depth": 6, "heads": 12, **kwargs})


def qdm_l(**kwargs) -> QDM:
    """QDM-L: 12+12 blocks, hidden 1024, 16 heads (Table 5: 691.94 M)."""
    return QDM(**{"dim": 1024, "depth": 12, "heads": 16, **kwargs})


def qdm_t(**kwargs) -> QDM:
    """QDM-T: a tiny 2+2-block, hidden-128 variant for CPU training and tests (not in the paper)."""
    return QDM(**{"dim": 128, "depth": 2, "heads": 2, **kwargs})


QDM_MODELS = {"qdm-s": qdm_s, "qdm-b": qdm_b, "qdm-l": qdm_l, "qdm-t": qdm_t}
