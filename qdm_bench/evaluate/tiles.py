"""Sampling a large image in independent tiles of a model's training crop, run as one batch."""
from __future__ import annotations

import torch

__all__ = ["to_tiles", "from_tiles"]


def to_tiles(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) → (B·nh·nw, C, side, side): non-overlapping tiles, row-major per image, as one batch."""
    from einops import rearrange

    return rearrange(x, "b c (nh h) (nw w) -> (b nh nw) c h w", h=side, w=side)


def from_tiles(x: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """The inverse of :func:`to_tiles` for an ``nh`` × ``nw`` grid of tiles per image."""
    from einops import rearrange

    return rearrange(x, "(b nh nw) c h w -> b c (nh h) (nw w)", nh=nh, nw=nw)
