"""Quadtree masks of QDM (paper §3.1, Algorithm 1; docs/qdm.md §2).

Algorithm 1
-----------
A quadtree splits an image recursively into four quadrants and stops where a region is homogeneous. QDM only needs
to know which blocks of the *bottom* level (side ``k``) are reached by the recursion, and that can be computed in one
batched pass, without recursion:

1. ``l = max(int(log2(H / Hm)), int(log2(W / Wm)))``, then ``l = max(l, 1)``; the kernel is ``k = 2**l``
   (:func:`quadtree_level`; ``int`` truncates toward zero, as in the reference).
2. ``V+ = max_pool2d(I, k)`` and ``V- = max_pool2d(-I, k)`` (stride = kernel, no padding), so ``V+ + V-`` is the
   per-channel ``max - min`` inside each k×k block. The channel reduction is the **mean** (:func:`block_ranges`).
3. A bit is 1 where the block range exceeds the threshold ``s``.
4. The bit grid is resized to ``(Hm, Wm)`` with nearest-neighbour interpolation (:func:`quadtree_mask`).

Because the block range is monotone under inclusion, a k-block's bit is 1 exactly when the explicit recursive
quadtree (:func:`quadtree_decompose` with ``min_size=k``) reaches that block and it is still not homogeneous (docs/qdm.md
§2.3); the recursive version is kept here for visualisation and as a test oracle.

Threshold semantics
-------------------
* ``mode="paper"`` (default): bit = ``range > s`` (strict). ``s = 0`` is the paper's "lossless mode": every
  non-constant block is active and only exactly constant blocks are inactive.
* ``mode="reference"``: bit = ``range >= s``, as in the reference code. ``s = 0`` then always gives an all-ones mask.

Value range
-----------
Images are expected in **[-1, 1]** (LR pixels mapped with ``(x - 0.5) / 0.5``). Thresholds are in these units; a
block range lies in ``[0, 2]``. The comparison is done in the images' dtype (the threshold is cast to it).

Sizes that are not a power-of-two ratio
---------------------------------------
The reference rule is followed exactly for every size: one level ``l`` (the max over both axes) is used on both
axes, remainder rows/columns (``H % k``, ``W % k``) are dropped by the pooling, and the nearest resize may skip
pooled rows/columns when the pooled grid is larger than the mask (e.g. ``H = 12 → Hm = 4``: k = 2, pooled 6 rows, of
which only 0, 1, 3, 4 are kept). In that case a :class:`QuadtreeWarning` says how many LR rows/columns are never
inspected; a non-integer upsampling factor (mask bits covering unequal areas) also warns. Sizes whose pooled grid
would be empty (``H < k`` or ``W < k``) raise ``ValueError``.
"""
from __future__ import annotations

import math
import operator
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

__all__ = [
    "QuadtreeWarning", "QuadLeaf", "MODES", "quadtree_level", "quadtree_mask", "block_ranges", "quadtree_decompose",
    "leaves_to_mask", "density", "active_windows", "window_density", "random_window_mask", "pipeline_masks",
]

MODES = ("paper", "reference")


class QuadtreeWarning(UserWarning):
    """Warns that a mask size makes Algorithm 1 skip LR rows/columns or stretch mask bits unevenly."""


# ----------------------------------------------------------------------------------------------------------- checks

def _positive_int(value, name: str) -> int:
    try:
        ivalue = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}; pass an int") from None
    if ivalue < 1:
        raise ValueError(f"{name} must be a positive integer, got {ivalue}; pass a value >= 1")
    return ivalue


def _size2(size, name: str = "size") -> tuple[int, int]:
    if isinstance(size, (tuple, list, torch.Size)):
        if len(size) != 2:
            raise ValueError(f"{name} must be an int or a (height, width) pair, got {tuple(size)!r}")
        return _positive_int(size[0], f"{name}[0]"), _positive_int(size[1], f"{name}[1]")
    s = _positive_int(size, name)
    return s, s


def _check_threshold(threshold) -> float:
    try:
        s = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a real number, got {threshold!r}; pass a float such as 0.15") from None
    if not math.isfinite(s):
        raise ValueError(f"threshold must be finite, got {s}; pass a float in [0, 2] (images in [-1, 1])")
    if s < 0:
        raise ValueError(f"threshold must be non-negative, got {s}; pass a float in [0, 2] (s = 0 is lossless mode)")
    return s


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown threshold mode {mode!r}; use 'paper' (range > s) or 'reference' (range >= s)")
    return mode


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"images must be 4-D (B, C, H, W), got shape {tuple(images.shape)}; "
                         f"add a batch axis with images.unsqueeze(0) for a single (C, H, W) image")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor in [-1, 1], got dtype {images.dtype}; "
                         f"convert with (images.float() / 255 - 0.5) / 0.5 for 8-bit pixels")


def _active(ranges: torch.Tensor, s: float, mode: str) -> torch.Tensor:
    # Comparison with a Python scalar happens in the tensor's dtype, as in the reference.
    return ranges > s if mode == "paper" else ranges >= s


# ------------------------------------------------------------------------------------------------------- Algorithm 1

def quadtree_level(h: int, w: int, hm: int, wm: int) -> int:
    """Reference level l = max(max(int(log2(h/hm)), int(log2(w/wm))), 1); the pooling kernel is 2**l."""
    h, w = _positive_int(h, "h"), _positive_int(w, "w")
    hm, wm = _positive_int(hm, "hm"), _positive_int(wm, "wm")
    level = max(int(math.log2(h / hm)), int(math.log2(w / wm)))
    return max(level, 1)


def block_ranges(images: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over channels of the per-channel (max - min) in each k×k block: (B, C, H, W) -> (B, H//k, W//k)."""
    _check_images(images)
    k = _positive_int(k, "k")
    h, w = images.shape[-2:]
    if h < k or w < k:
        raise ValueError(f"pooled grid would be empty: image {h}×{w} is smaller than the {k}×{k} kernel; "
                         f"use a smaller kernel or a larger image")
    with torch.no_grad():
        vmax = F.max_pool2d(images, kernel_size=k, stride=k)
        vneg = F.max_pool2d(-images, kernel_size=k, stride=k)
        return (vmax + vneg).mean(dim=1)


def _inspected(n: int, k: int, m: int) -> int:
    """How many of the n LR rows the pooling (kernel k) plus nearest resize (to m) actually reads."""
    pooled = n // k
    if pooled <= m:  # nearest upsampling (or identity) visits every source row
        return pooled * k
    src = torch.arange(pooled, dtype=torch.float32).view(1, 1, pooled, 1)
    kept = F.interpolate(src, size=(m, 1), mode="nearest").unique().numel()
    return kept * k


def _warn_sizes(h: int, w: int, hm: int, wm: int, k: int, level: int) -> None:
    rows, cols = _inspected(h, k, hm), _inspected(w, k, wm)
    ph, pw = h // k, w // k
    where = f"image {h}×{w} → mask {hm}×{wm} uses kernel {k} (level {level})"
    fix = "choose a mask size that divides the image size by a power of two"
    if rows < h or cols < w:
        warnings.warn(f"quadtree_mask: {where}, so {h - rows} of {h} LR rows and {w - cols} of {w} LR columns are "
                      f"not inspected; {fix}", QuadtreeWarning, stacklevel=3)
    elif hm % ph or wm % pw:
        warnings.warn(f"quadtree_mask: {where}; the pooled {ph}×{pw} grid is stretched to {hm}×{wm} by a "
                      f"non-integer factor, so mask bits cover unequal LR areas; {fix}", QuadtreeWarning,
                      stacklevel=3)


def quadtree_mask(images: torch.Tensor, size: tuple[int, int] | int, threshold: float,
                  mode: str = "paper") -> torch.Tensor:
    """Algorithm 1: batched bottom-level quadtree mask (B, Hm, Wm), float {0, 1} in the images' dtype and device."""
    s = _check_threshold(threshold)
    mode = _check_mode(mode)
    _check_images(images)
    hm, wm = _size2(size)
    h, w = images.shape[-2:]
    level = quadtree_level(h, w, hm, wm)
    k = 2 ** level
    if h < k or w < k:
        fix = ("use an image of at least 2×2 pixels (the kernel is never below 2)" if min(h, w) < 2 else
               f"request a larger mask size (e.g. {h // 2}×{w // 2} keeps the kernel at 2) or a larger image")
        raise ValueError(f"pooled grid would be empty: image {h}×{w} → mask {hm}×{wm} gives kernel {k} "
                         f"(level {level}, the max over both axes), larger than the image; {fix}")
    _warn_sizes(h, w, hm, wm, k, level)
    with torch.no_grad():
        bits = _active(block_ranges(images, k), s, mode).to(images.dtype)
        return F.interpolate(bits.unsqueeze(1), size=(hm, wm), mode="nearest").squeeze(1)


# ---------------------------------------------------------------------------------------- explicit recursive oracle

@dataclass(frozen=True)
class QuadLeaf:
    """One leaf of an explicit quadtree: top-left (y, x), size h×w in pixels, splits from its root, active flag."""

    y: int
    x: int
    h: int
    w: int
    depth: int
    active: bool


def quadtree_decompose(image: torch.Tensor, threshold: float, min_size: int = 1,
                       mode: str = "paper") -> list[QuadLeaf]:
    """Recursive quadtree of a (C, H, W) image down to min_size; leaves in row-major-root, depth-first order."""
    s = _check_threshold(threshold)
    mode = _check_mode(mode)
    m = _positive_int(min_size, "min_size")
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a 3-D (C, H, W) tensor, got {shape}; take one sample with images[i]")
    if not image.is_floating_point():
        raise ValueError(f"image must be a floating-point tensor in [-1, 1], got dtype {image.dtype}")
    h, w = image.shape[-2:]
    if h % m or w % m:
        raise ValueError(f"image {h}×{w} is not a multiple of min_size {m}; crop it to "
                         f"{h - h % m}×{w - w % m} or choose a min_size that divides both sides")
    # Root side: min_size · 2^j with j maximal such that it divides both H and W.
    side = m
    while h % (2 * side) == 0 and w % (2 * side) == 0:
        side *= 2

    def node_range(y: int, x: int, n: int) -> torch.Tensor:
        block = image[:, y:y + n, x:x + n].reshape(image.shape[0], -1)
        return (block.amax(dim=1) - block.amin(dim=1)).mean()

    leaves: list[QuadLeaf] = []

    def visit(y: int, x: int, n: int, depth: int) -> None:
        active = bool(_active(node_range(y, x, n), s, mode))
        if not active or n == m:
            leaves.append(QuadLeaf(y, x, n, n, depth, active and n == m))
            return
        half = n // 2
        for dy, dx in ((0, 0), (0, half), (half, 0), (half, half)):
            visit(y + dy, x + dx, half, depth + 1)

    with torch.no_grad():
        for y0 in range(0, h, side):
            for x0 in range(0, w, side):
                visit(y0, x0, side, 0)
    return leaves


def leaves_to_mask(leaves: Iterable[QuadLeaf], h: int, w: int, min_size: int) -> torch.Tensor:
    """Float32 mask (h//min_size, w//min_size) with 1 at every active bottom-level leaf."""
    m = _positive_int(min_size, "min_size")
    h, w = _positive_int(h, "h"), _positive_int(w, "w")
    mask = torch.zeros(h // m, w // m, dtype=torch.float32)
    for leaf in leaves:
        if not leaf.active:
            continue
        if leaf.h != m or leaf.w != m or leaf.y % m or leaf.x % m:
            raise ValueError(f"active leaf {leaf} is not a min_size={m} aligned block; pass the min_size used by "
                             f"quadtree_decompose")
        mask[leaf.y // m, leaf.x // m] = 1.0
    return mask


# ------------------------------------------------------------------------------------------------ density & windows

def density(mask: torch.Tensor) -> torch.Tensor:
    """Fraction of non-zero entries per sample of a (B, ...) mask, shape (B,)."""
    if mask.dim() < 1:
        raise ValueError("mask must have a batch axis (B, ...), got a 0-D tensor; use mask.reshape(1, -1)")
    flat = (mask.reshape(mask.shape[0], -1) != 0)
    dtype = mask.dtype if mask.is_floating_point() else torch.float32
    return flat.to(dtype).mean(dim=1)


def _check_grid(mask: torch.Tensor, window) -> int:
    if not isinstance(mask, torch.Tensor) or mask.dim() != 3:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be 3-D (B, gh, gw), got {shape}; squeeze a channel axis with mask[:, 0]")
    win = _positive_int(window, "window")
    gh, gw = mask.shape[-2:]
    if gh % win or gw % win:
        raise ValueError(f"mask grid {gh}×{gw} is not divisible by window {win}; use a grid that is a multiple of "
                         f"the window (latent size divisible by down_patch·window)")
    return win


def active_windows(mask: torch.Tensor, window: int) -> torch.Tensor:
    """Bool (B, gh//window, gw//window): a window is active if any of its window×window bits is non-zero."""
    win = _check_grid(mask, window)
    blocks = rearrange(mask != 0, "b (h p) (w q) -> b h w (p q)", p=win, q=win)
    return blocks.any(dim=-1)


def window_density(mask: torch.Tensor, window: int) -> torch.Tensor:
    """Fraction of active windows per sample, shape (B,)."""
    dtype = mask.dtype if mask.is_floating_point() else torch.float32
    return active_windows(mask, window).to(dtype).mean(dim=(1, 2))


def random_window_mask(batch: int, gh: int, gw: int, window: int, density: float,
                       generator: torch.Generator | None = None, *,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Float32 (B, gh, gw) mask with round(density·n_windows) (≥ 1 if density > 0) random full windows per sample."""
    batch = _positive_int(batch, "batch")
    gh, gw = _positive_int(gh, "gh"), _positive_int(gw, "gw")
    win = _positive_int(window, "window")
    try:
        d = float(density)
    except (TypeError, ValueError):
        raise ValueError(f"density must be a number in [0, 1], got {density!r}") from None
    if not 0.0 <= d <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {d}; pass the fraction of windows to select (0.5 = half)")
    if gh % win or gw % win:
        raise ValueError(f"grid {gh}×{gw} is not divisible by window {win}; use a grid that is a multiple of the window")
    nh, nw = gh // win, gw // win
    n = nh * nw
    count = int(round(d * n))
    if d > 0:
        count = max(count, 1)
    chosen = torch.zeros(batch, n, dtype=torch.float32)
    for b in range(batch):
        chosen[b, torch.randperm(n, generator=generator)[:count]] = 1.0
    grid = repeat(chosen, "b (h w) -> b (h p) (w q)", h=nh, w=nw, p=win, q=win)
    return grid.to(device) if device is not None else grid


# --------------------------------------------------------------------------------------------------- pipeline masks

def pipeline_masks(lr: torch.Tensor, latent_size: Sequence[int] | int, threshold: float | None,
                   mode: str = "paper", down_patch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampler masks (docs/qdm.md §2.4): diffusion mask (B, 1, H, W) and model mask (B, H/down_patch, W/down_patch)."""
    _check_images(lr)
    mode = _check_mode(mode)
    lh, lw = _size2(latent_size, "latent_size")
    p = _positive_int(down_patch, "down_patch")
    if lh % p or lw % p:
        raise ValueError(f"latent size {lh}×{lw} is not divisible by down_patch {p}; use a latent size that is a "
                         f"multiple of the downstream patch")
    batch = lr.shape[0]
    if threshold is None:  # full mask
        ones = dict(dtype=lr.dtype, device=lr.device)
        return torch.ones(batch, 1, lh, lw, **ones), torch.ones(batch, lh // p, lw // p, **ones)
    diffusion_mask = quadtree_mask(lr, (lh, lw), threshold, mode).unsqueeze(1)
    model_mask = quadtree_mask(lr, (lh // p, lw // p), threshold, mode)
    return diffusion_mask, model_mask
