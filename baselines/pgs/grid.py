"""The HR patch grid of patch-adaptive group sampling: overlapping patches, patchify / blend back, window weights."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange

from baselines.pgs.util import check_int

__all__ = ["WINDOWS", "blend_window", "PatchGrid"]

WINDOWS = ("hann", "linear")


def _starts(size: int, patch: int, stride: int) -> tuple[int, ...]:
    """Patch start offsets covering [0, size): regular steps, the last one clamped to size - patch."""
    n = math.ceil((size - patch) / stride) + 1
    return tuple(min(i * stride, size - patch) for i in range(n))


def blend_window(patch: int, overlap: int, kind: str = "hann", dtype=torch.float32, device=None) -> torch.Tensor:
    """1-D blending weights (patch,): 1 in the middle, a Hann or linear ramp over ``overlap`` pixels at each end.

    The ramps of two neighbours overlapping by exactly ``overlap`` sum to 1; all weights are > 0, so normalising by
    the per-pixel weight sum is always defined.
    """
    if kind not in WINDOWS:
        raise ValueError(f"unknown blending window {kind!r}; use one of {', '.join(WINDOWS)}")
    w = torch.ones(patch, dtype=torch.float64)
    if overlap > 0:
        u = (torch.arange(overlap, dtype=torch.float64) + 0.5) / overlap
        ramp = torch.sin(u * math.pi / 2) ** 2 if kind == "hann" else u
        w[:overlap] = torch.minimum(w[:overlap], ramp)
        w[patch - overlap:] = torch.minimum(w[patch - overlap:], ramp.flip(0))
    return w.to(dtype=dtype, device=device)


@dataclass(frozen=True)
class PatchGrid:
    """Overlapping P×P patches covering an H×W image (stride P - o; the last row/column of patches is clamped)."""

    height: int
    width: int
    patch: int
    overlap: int = 0

    def __post_init__(self) -> None:
        """Validate sizes: 0 <= overlap < patch <= min(H, W)."""
        for name in ("height", "width", "patch"):
            check_int(getattr(self, name), name)
        check_int(self.overlap, "overlap", 0)
        if self.overlap >= self.patch:
            raise ValueError(f"overlap {self.overlap} must be smaller than the patch {self.patch}; lower --overlap")
        if self.patch > min(self.height, self.width):
            raise ValueError(f"patch {self.patch} is larger than the image {self.height}x{self.width}; use "
                             f"--patch-size <= {min(self.height, self.width)}")

    @property
    def stride(self) -> int:
        """Distance between regular patch starts."""
        return self.patch - self.overlap

    @property
    def rows(self) -> tuple[int, ...]:
        """Top offsets of the patch rows."""
        return _starts(self.height, self.patch, self.stride)

    @property
    def cols(self) -> tuple[int, ...]:
        """Left offsets of the patch columns."""
        return _starts(self.width, self.patch, self.stride)

    @property
    def shape(self) -> tuple[int, int]:
        """(Hp, Wp): patches per column and per row."""
        return len(self.rows), len(self.cols)

    @property
    def count(self) -> int:
        """Patches per image."""
        return len(self.rows) * len(self.cols)

    @property
    def coverage(self) -> float:
        """Σ patch pixels / image pixels (> 1 with overlap)."""
        return self.count * self.patch ** 2 / (self.height * self.width)

    def scaled(self, factor: int) -> "PatchGrid":
        """The same grid at 1/factor resolution (the LR grid of an HR grid); every size must divide exactly."""
        if any(v % factor for v in (self.height, self.width, self.patch, self.overlap)):
            raise ValueError(f"image {self.height}x{self.width}, patch {self.patch} and overlap {self.overlap} must be "
                             f"multiples of the scale {factor} (the LR condition is cropped per patch); e.g. --patch-size "
                             f"{self.patch // factor * factor or factor} --overlap {self.overlap // factor * factor}")
        return PatchGrid(self.height // factor, self.width // factor, self.patch // factor, self.overlap // factor)

    def _index(self, starts: tuple[int, ...], device) -> torch.Tensor:
        """(n, P) pixel indices of the patches along one axis."""
        return torch.tensor(starts, device=device)[:, None] + torch.arange(self.patch, device=device)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B·Hp·Wp, C, P, P), patches in (image, row, column) order."""
        if x.dim() != 4 or tuple(x.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"patchify expects (B, C, {self.height}, {self.width}), got {tuple(x.shape)}")
        r, c = self._index(self.rows, x.device), self._index(self.cols, x.device)
        p = x[:, :, r][..., c]  # (B, C, Hp, P, Wp, P)
        return rearrange(p, "b c hp p wp q -> (b hp wp) c p q")

    def unpatchify(self, patches: torch.Tensor, window: str = "hann") -> torch.Tensor:
        """(B·Hp·Wp, C, P, P) → (B, C, H, W): weighted average of the overlapping patches (weights sum to 1)."""
        hp, wp = self.shape
        if patches.dim() != 4 or patches.shape[0] % self.count or tuple(patches.shape[-2:]) != (self.patch,) * 2:
            raise ValueError(f"unpatchify expects (B·{hp}·{wp}, C, {self.patch}, {self.patch}), got "
                             f"{tuple(patches.shape)}")
        b, ch = patches.shape[0] // self.count, patches.shape[1]
        w1 = blend_window(self.patch, self.overlap, window, patches.dtype, patches.device)
        w = (w1[:, None] * w1[None, :]).expand(hp, wp, -1, -1)
        r, c = self._index(self.rows, patches.device), self._index(self.cols, patches.device)
        flat = (r[:, None, :, None] * self.width + c[None, :, None, :]).reshape(-1)  # (Hp·Wp·P·P,)
        vals = rearrange(patches, "(b hp wp) c p q -> b c (hp wp p q)", b=b, hp=hp) * w.reshape(1, 1, -1)
        num = patches.new_zeros(b, ch, self.height * self.width).index_add_(2, flat, vals)
        den = patches.new_zeros(self.height * self.width).index_add_(0, flat, w.reshape(-1))
        return (num / den).reshape(b, ch, self.height, self.width)
