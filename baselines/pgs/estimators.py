"""Training-free patch difficulty estimators of PGS: (lq, grid, sf, coarse) → D in [0, 1] per patch, 1 = easy."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from baselines.pgs.grid import PatchGrid
from baselines.pgs.util import ASSUMED, check_int
from qdm.sampling import bicubic_y0

__all__ = ["DifficultyEstimator", "RangeEstimator", "QuadtreeEstimator", "GradientEstimator", "ResidualEstimator",
           "ESTIMATORS", "make_estimator"]


def _patch_mean(grid: PatchGrid, energy: torch.Tensor) -> torch.Tensor:
    """Mean of a (B, 1, H, W) map over every patch → (B, Hp, Wp)."""
    hp, wp = grid.shape
    return rearrange(grid.patchify(energy).mean(dim=(1, 2, 3)), "(b hp wp) -> b hp wp", hp=hp, wp=wp)


class DifficultyEstimator:
    """Base class: ``estimator(lq, grid, sf, coarse=None)`` → D (B, Hp, Wp) in [0, 1], 1 = easy."""

    name = "base"
    needs_coarse = False
    overhead_passes = 0  # extra full-image network passes the estimator itself needs (training-free: 0)
    assumptions: tuple[str, ...] = ()

    def __call__(self, lq: torch.Tensor, grid: PatchGrid, sf: int, coarse: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for reports."""
        return self.name


class RangeEstimator(DifficultyEstimator):
    """QDM's Algorithm-1 range test at patch granularity: D = 1 - (channel-mean max - min of the LR patch) / 2."""

    name = "range"
    assumptions = ("range estimator: D = 1 - r/2, r = QDM block range (max - min, channel mean) of the patch's LR "
                   "region in [-1, 1] units (r in [0, 2]) " + ASSUMED,)

    def __call__(self, lq, grid, sf, coarse=None):
        from qdm.quadtree import block_ranges

        lr = grid.scaled(sf)
        patches = lr.patchify(lq)
        r = block_ranges(patches, lr.patch)  # (B·Hp·Wp, 1, 1)
        hp, wp = grid.shape
        return rearrange((1 - r / 2).clamp(0, 1), "(b hp wp) 1 1 -> b hp wp", hp=hp, wp=wp)


class QuadtreeEstimator(DifficultyEstimator):
    """QDM's quadtree mask aggregated per patch: D = fraction of the patch's k×k LR blocks that Algorithm 1 leaves
    inactive (block range <= s in "paper" mode, < s in "reference" mode); 1 - D is the QDM mask density."""

    name = "quadtree"

    def __init__(self, threshold: float = 0.15, block: int = 2, mode: str = "paper"):
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"quadtree threshold must be a number >= 0 (LR in [-1, 1]), got {threshold!r}")
        if mode not in ("paper", "reference"):
            raise ValueError(f"unknown threshold mode {mode!r}; use paper (range > s) or reference (range >= s)")
        self.threshold, self.block, self.mode = float(threshold), check_int(block, "block"), mode
        self.assumptions = (f"quadtree estimator: D = share of {self.block}x{self.block} LR blocks with range "
                            f"{'<=' if mode == 'paper' else '<'} {self.threshold:g} (QDM Alg. 1, {mode} mode) "
                            + ASSUMED,)

    def __call__(self, lq, grid, sf, coarse=None):
        from qdm.quadtree import block_ranges

        lr = grid.scaled(sf)
        if lr.patch % self.block:
            raise ValueError(f"the LR patch side {lr.patch} is not a multiple of the quadtree block {self.block}; "
                             f"use --patch-size a multiple of {self.block * sf}")
        r = block_ranges(lr.patchify(lq), self.block)  # (B·Hp·Wp, p/k, p/k)
        inactive = r <= self.threshold if self.mode == "paper" else r < self.threshold
        hp, wp = grid.shape
        return rearrange(inactive.to(lq.dtype).mean(dim=(1, 2)), "(b hp wp) -> b hp wp", hp=hp, wp=wp)

    def describe(self) -> str:
        return f"quadtree(s={self.threshold:g}, block={self.block}, {self.mode})"


def _positive_scale(scale: Any, what: str) -> float:
    """An estimator's normalising scale, checked: a finite number > 0."""
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"{what} scale must be a number > 0, got {scale!r}")
    return float(scale)


class GradientEstimator(DifficultyEstimator):
    """Gradient energy of the bicubic-upsampled LR: D = 1 - min(g / scale, 1), g = patch RMS gradient magnitude."""

    name = "gradient"

    def __init__(self, scale: float = 0.25):
        self.scale = _positive_scale(scale, "gradient")
        self.assumptions = (f"gradient estimator: D = 1 - min(g / {self.scale:g}, 1), g = RMS forward-difference "
                            "gradient magnitude per HR pixel of bicubic(lq) in [-1, 1] units " + ASSUMED,)

    def __call__(self, lq, grid, sf, coarse=None):
        y0 = bicubic_y0(lq, size=(grid.height, grid.width))
        dy = F.pad(y0[..., 1:, :] - y0[..., :-1, :], (0, 0, 0, 1))
        dx = F.pad(y0[..., :, 1:] - y0[..., :, :-1], (0, 1, 0, 0))
        energy = (dx ** 2 + dy ** 2).mean(dim=1, keepdim=True)
        g = _patch_mean(grid, energy).sqrt()
        return (1 - g / self.scale).clamp(0, 1)

    def describe(self) -> str:
        return f"gradient(scale={self.scale:g})"


class ResidualEstimator(DifficultyEstimator):
    """|coarse - bicubic| energy: D = 1 - min(mean |coarse - y0| / scale, 1) per patch; needs a coarse SR estimate."""

    name = "residual"
    needs_coarse = True

    def __init__(self, scale: float = 0.1):
        self.scale = _positive_scale(scale, "residual")
        self.assumptions = (f"residual estimator: D = 1 - min(mean|coarse - bicubic| / {self.scale:g}, 1) per patch "
                            "in [-1, 1] units " + ASSUMED,)

    def __call__(self, lq, grid, sf, coarse=None):
        if coarse is None:
            raise ValueError("the residual estimator needs a coarse HR estimate (coarse=...); use --estimator range "
                             "or gradient, or compute one with one_shot_coarse()")
        if tuple(coarse.shape[-2:]) != (grid.height, grid.width):
            raise ValueError(f"coarse must be HR size {grid.height}x{grid.width}, got {tuple(coarse.shape[-2:])}")
        y0 = bicubic_y0(lq, size=(grid.height, grid.width))
        r = _patch_mean(grid, (coarse - y0).abs().mean(dim=1, keepdim=True))
        return (1 - r / self.scale).clamp(0, 1)

    def describe(self) -> str:
        return f"residual(scale={self.scale:g})"


ESTIMATORS: dict[str, type[DifficultyEstimator]] = {
    "range": RangeEstimator, "quadtree": QuadtreeEstimator, "gradient": GradientEstimator,
    "residual": ResidualEstimator,
}


def make_estimator(name: str | DifficultyEstimator, **kwargs: Any) -> DifficultyEstimator:
    """An estimator by name (range, quadtree, gradient, residual) or the given instance."""
    if isinstance(name, DifficultyEstimator):
        return name
    if name not in ESTIMATORS:
        raise ValueError(f"unknown difficulty estimator {name!r}; use one of {', '.join(ESTIMATORS)}")
    return ESTIMATORS[name](**kwargs)
