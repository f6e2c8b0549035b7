"""The evaluation-image type and the value and layout helpers that every image source shares."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from qdm_bench.errors import ImageError

KINDS = ("natural", "ct", "mr", "phantom", "user")


@dataclass(frozen=True)
class EvalImage:
    """One evaluation image: the HR target in [0, 1] and where it came from."""

    name: str
    hr: torch.Tensor = field(repr=False)  # (3, H, W) float32 in [0, 1]
    kind: str  # one of KINDS
    source: str  # where it came from
    windowing: str | None  # the rule that mapped raw values to [0, 1]; None: already in [0, 1]

    def __post_init__(self) -> None:
        """Check the tensor layout and the kind."""
        if not isinstance(self.hr, torch.Tensor) or self.hr.ndim != 3 or self.hr.shape[0] != 3:
            raise ImageError(f"image {self.name}: hr must be a (3, H, W) tensor; repeat grey images to 3 channels")
        if self.kind not in KINDS:
            raise ImageError(f"image {self.name}: unknown kind {self.kind!r}; use one of {', '.join(KINDS)}")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the HR image."""
        return int(self.hr.shape[1]), int(self.hr.shape[2])


_Loader = Callable[[], list[EvalImage]]


# ------------------------------------------------------------------------------------------------ values and layout

def _scale_raster(arr: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Raster values to [0, 1] by dtype (see :mod:`qdm_bench.data.images`) and the rule used."""
    if arr.dtype == np.uint8:
        return arr / 255.0, "uint8 / 255"
    if arr.dtype == np.uint16:
        return arr / 65535.0, "uint16 / 65535"
    if arr.dtype == np.bool_:
        return arr.astype(np.float64), "bool as {0, 1}"
    x = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating) and x.size and x.min() >= 0.0 and x.max() <= 1.0:
        return x, None
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)), "min-max per image"


def _to_hr(x: np.ndarray, where: str) -> torch.Tensor:
    """(H, W) or (H, W, C) values in [0, 1] → (3, H, W) float32 (grey repeated, alpha dropped)."""
    if x.ndim == 3 and x.shape[-1] in (1, 2):
        x = x[..., 0]  # grey (+ alpha)
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=-1)
    if x.ndim != 3 or x.shape[-1] not in (3, 4):
        raise ImageError(f"{where}: unsupported pixel layout {tuple(x.shape)}; give a single grey or RGB image")
    t = torch.from_numpy(np.ascontiguousarray(x[..., :3], dtype=np.float32)).permute(2, 0, 1).contiguous()
    return t.clamp_(0.0, 1.0)


def _center_crop_np(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """Centred crop of the first two axes."""
    top, left = (arr.shape[0] - h) // 2, (arr.shape[1] - w) // 2
    return arr[top:top + h, left:left + w]


def _positive(value, name: str) -> int:
    """Check a positive integer argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ImageError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _first_line(e: Exception) -> str:
    """The first line of an exception message (or its type name)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
