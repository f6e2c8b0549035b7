"""MATLAB-compatible bicubic resizing: ``imresize(x, scale, 'bicubic')`` as published SR benchmarks make LR images.

The rules, from MATLAB's ``imresize`` (each dimension on its own, as a matrix product):

* Keys' cubic kernel with a = -0.5; when downscaling (scale < 1, antialiasing on, MATLAB's default) the kernel is
  stretched by the scale, ``h(x) = scale · k(scale · x)``, with width ``4 / scale``;
* output pixel u (1-based) maps to the input coordinate ``x = u / scale + 0.5 · (1 - 1 / scale)``;
* it takes the ``ceil(width) + 2`` input indices from ``floor(x - width / 2)`` on, weights ``h(x - i)`` normalised
  to sum 1; indices outside the image are mirrored with the edge included (1-based: 0 → 1, -1 → 2, n + 1 → n);
  indices of zero weight contribute nothing (MATLAB drops them);
* the output side is ``ceil(scale · n)``; equal scales resize the height first, then the width (MATLAB resizes the
  dimension of the smaller scale first, and height first on a tie).

Everything is computed in float64 and returned in the input's dtype; nothing is clamped (MATLAB does not clamp a
double image).  :func:`uint8_grid` rounds to uint8 levels as MATLAB's ``im2uint8`` does (half away from zero).
"""
from __future__ import annotations

import math

import torch

__all__ = ["cubic", "resize_matrix", "imresize", "uint8_grid"]


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's 'bicubic'), support |x| <= 2."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return near + far


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """The (out_len, in_len) float64 matrix that resizes one dimension as MATLAB's bicubic imresize does."""
    if scale < 1 and antialias:
        def kernel(t: torch.Tensor) -> torch.Tensor:
            return scale * cubic(scale * t)
        width = 4.0 / scale
    else:
        kernel, width = cubic, 4.0
    u = torch.arange(1, out_len + 1, dtype=torch.float64, device=device) / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - width / 2.0)
    idx = left[:, None] + torch.arange(math.ceil(width) + 2, dtype=torch.float64, device=device)  # 1-based
    w = kernel(u[:, None] - idx)
    w = w / w.sum(dim=1, keepdim=True)
    m = torch.remainder(idx.long() - 1, 2 * in_len)  # symmetric padding: [1..n, n..1] repeated
    src = torch.where(m < in_len, m, 2 * in_len - 1 - m)  # 0-based input index
    return torch.zeros(out_len, in_len, dtype=torch.float64, device=device).scatter_add_(1, src, w)


def _out_len(n: int, scale: float) -> int:
    """ceil(scale · n), ignoring a rounding error of the product (1/5 · 10 is 2, not 3)."""
    return max(1, math.ceil(round(scale * n, 9)))


def imresize(x: torch.Tensor, scale: float, antialias: bool = True) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` of (..., H, W) images (e.g. (B, 3, H, W) or (3, H, W)); no clamp."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise ValueError(f"imresize needs a floating tensor of shape (..., H, W), got {type(x).__name__}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    h, w = x.shape[-2:]
    mh = resize_matrix(h, _out_len(h, scale), float(scale), antialias, x.device)
    mw = resize_matrix(w, _out_len(w, scale), float(scale), antialias, x.device)
    y = torch.matmul(mh, x.to(torch.float64))  # height first (equal scales)
    y = torch.matmul(y, mw.T)
    return y.to(x.dtype)


def uint8_grid(x: torch.Tensor) -> torch.Tensor:
    """Round [0, 1] images to uint8 levels, ``floor(clip(x, 0, 1) · 255 + 0.5) / 255`` (MATLAB's im2uint8)."""
    return torch.floor(x.to(torch.float64).clamp(0.0, 1.0) * 255.0 + 0.5).div_(255.0).to(x.dtype)
