"""DiT baselines (Peebles & Xie), built from QDM's own transformer blocks (:class:`qdm.layers.DiTStream`).

* :class:`DiT` — the LR-conditioned DiT of the Figure-5 comparison: x_t concatenated with the LR image (6 input
  channels), no class label, x₀ prediction with 3 output channels (``learn_sigma=True`` gives 6).
* :class:`DiTClassCond` — the official class-conditional form (4-channel latent, label embedding with a CFG "null"
  row, learn_sigma), used only to check parameters and MACs against the DiT paper.

Sizes S/B/L/XL (depth 12/12/24/28, hidden 384/768/1024/1152, heads 6/12/16/16) × any patch: :func:`dit`.  Sin-cos
positional tables are computed for the actual token grid, so any H, W that are multiples of the patch work, square
or not.
"""
from __future__ import annotations

import torch
from torch import nn

from qdm.layers import DiTStream, condition_on_lq, init_dit_weights

__all__ = ["DiT", "DiTClassCond", "DIT_SIZES", "dit"]

DIT_SIZES = {"s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}


class DiT(DiTStream):
    """LR-conditioned DiT: ``model(x_t, t, lq, mask=None)`` → x₀ prediction (the mask is ignored)."""

    def __init__(self, depth: int = 12, dim: int = 384, heads: int = 6, patch: int = 8, in_channels: int = 3,
                 lq_channels: int = 3, learn_sigma: bool = False, mlp_ratio: float = 4.0):
        out_channels = in_channels * (2 if learn_sigma else 1)
        super().__init__(in_channels + lq_channels, out_channels, patch, dim, depth, heads, mlp_ratio)
        self.in_channels, self.lq_channels, self.out_channels = in_channels, lq_channels, out_channels
        init_dit_weights(self)

    @property
    def input_multiple(self) -> int:
        """H and W must be multiples of the patch size."""
        return self.patch

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor,  # type: ignore[override]
                mask: torch.Tensor | None = None) -> torch.Tensor:
        H, W = x_t.shape[-2:]
        if x_t.ndim != 4 or H % self.patch or W % self.patch:
            raise ValueError(f"DiT with patch {self.patch} needs H and W multiples of {self.patch}, "
                             f"got {tuple(x_t.shape)}; crop or pad to a multiple of {self.patch}")
        return super().forward(condition_on_lq(x_t, lq), t)[1]

    def frozen_table_size(self, height: int, width: int) -> int:
        """Elements of the sin-cos table the reference stores as a frozen parameter at this input size."""
        return (height // self.patch) * (width // self.patch) * self.dim


class DiTClassCond(DiTStream):
    """Official class-conditional DiT: ``model(x, t, y)``; c = t_emb + label_emb (extra "null" row for CFG)."""

    def __init__(self, depth: int = 12, dim: int = 384, heads: int = 6, patch: int = 2, in_channels: int = 4,
                 num_classes: int = 1000, class_dropout_prob: float = 0.1, learn_sigma: bool = True,
                 mlp_ratio: float = 4.0):
        out_channels = in_channels * (2 if learn_sigma else 1)
        super().__init__(in_channels, out_channels, patch, dim, depth, heads, mlp_ratio)
        self.y_embedder = nn.Embedding(num_classes + int(class_dropout_prob > 0), dim)
        init_dit_weights(self)
        nn.init.normal_(self.y_embedder.weight, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, t, extra_cond=self.y_embedder(y))[1]

    def frozen_table_size(self, height: int, width: int) -> int:
        """Elements of the frozen sin-cos table of the official implementation at this latent size."""
        return (height // self.patch) * (width // self.patch) * self.dim


def dit(size: str = "s", patch: int = 8, **kwargs) -> DiT:
    """LR-conditioned DiT of a size in :data:`DIT_SIZES` (S/B/L/XL) and a patch; keywords override the size's."""
    if size not in DIT_SIZES:
        raise ValueError(f"unknown DiT size {size!r}; use one of {', '.join(DIT_SIZES)}")
    depth, dim, heads = DIT_SIZES[size]
    return DiT(**{"depth": depth, "dim": dim, "heads": heads, "patch": patch, **kwargs})
