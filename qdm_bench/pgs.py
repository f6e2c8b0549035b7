"""Patch-adaptive group sampling (PGS), PatchScaler style, for any registered backbone (spec seed-systems §1.2, §3).

PatchScaler's premise: easy regions need few sampling steps, hard ones many.  PGS splits the HR-size image into
(overlapping) patches, scores each patch's difficulty, sorts the patches into groups and runs every group with its
own shortened schedule, starting late on a *shortcut path* (the coarse estimate diffused to the group's start
timestep), with all patches of a group batched together.  The pieces:

1. **Difficulty estimators** (``range``, ``quadtree``, ``gradient``, ``residual``; :func:`make_estimator`):
   (lq, grid, sf, coarse) → D ∈ [0, 1]^(B × Hp × Wp) on the patch grid, 1 = easy.  All are training-free proxies for
   PatchScaler's GRM confidence (which needs a trained GRM).
2. **Group policy** (:class:`GroupPolicy`): thresholds γ1 > γ2 > … on D, or a fixed fraction of patches per group
   (quantiles); a group id per patch and a table {g: (t_start_g, n_steps_g)}, t_start increasing with difficulty.
3. **Diffusion families** (shortcut init + respaced steps): :class:`ResShiftFamily` (QDM, U-Net, DiT, Swin-U-Net,
   every model with ``ModelInfo.diffusion == "resshift"``) and :class:`DDIMFamily` (ε-predicting DDPM backbones
   such as BI-DiffSR).  Models are always called with their *original* timestep index, so a checkpoint trained on
   the full schedule works unchanged.
4. :class:`PatchGroupSampler`: patchify, run each group in patch batches, blend the patches back (Hann or linear
   windows, weights normalised per pixel) and return the SR image with a :class:`PGSReport` of counts and costs.

Costs (:class:`PGSReport`): M_g patches per group; patch evaluations Σ M_g·N_g; the full-image-equivalent NFE
Σ (M_g/M)·N_g (comparable to the uniform NFE only without overlap: overlapping patches cover more than the image);
the overlap-aware pixel-equivalent NFE Σ M_g·N_g·P²/(H·W); model calls Σ ⌈M_g/B⌉·N_g; overhead passes; peak memory
and wall time of the run.

Everything the paper does not fix (the patch size and overlap, the γ thresholds, the per-group start timesteps and
step counts, the estimators' normalisation) is a qdm-bench choice and is listed as ``[assumed]`` in the report.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange

from qdm.diffusion import resolve_generator

__all__ = [
    "ASSUMED", "WINDOWS", "PatchGrid", "blend_window", "DifficultyEstimator", "RangeEstimator", "QuadtreeEstimator",
    "GradientEstimator", "ResidualEstimator", "ESTIMATORS", "make_estimator", "GroupPolicy", "respace",
    "ResShiftFamily", "DDIMFamily", "family_for", "GroupStats", "PGSReport", "PGSResult", "PatchGroupSampler",
    "uniform_sample", "one_shot_coarse", "group_map_text",
]

ASSUMED = "[assumed]"
WINDOWS = ("hann", "linear")
GROUP_NAMES = ("simple", "medium", "hard")
DEFAULT_THRESHOLDS = (0.9, 0.6)  # on D (1 = easy); simple: D >= 0.9, medium: 0.6 <= D < 0.9, hard: D < 0.6
DEFAULT_QUANTILES = (0.5, 0.3, 0.2)  # fraction of the patches per group, easy → hard
DEFAULT_T_FRACTIONS = (0.2, 0.6, 1.0)  # t_start_g = round(fraction · (T - 1)): ResShift T = 15 → 3, 8, 14
DEFAULT_MEDIUM_FRACTION = 0.4  # N_medium = round(0.4 · N_uniform): 15 → 6; N = (2, 6, 15) as in PatchScaler Fig. 1(a)


def _round(x: float) -> int:
    """Round half up (no banker's rounding, so respaced indices never collide)."""
    return int(math.floor(x + 0.5))


def _int(value, name: str, minimum: int = 1) -> int:
    """Check an integer argument (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------------------ patch grid

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
            _int(getattr(self, name), name)
        _int(self.overlap, "overlap", 0)
        if self.overlap >= self.patch:
            raise ValueError(f"overlap {self.overlap} must be smaller than the patch {self.patch}; lower --overlap")
        if self.patch > min(self.height, self.width):
            raise ValueError(f"patch {self.patch} is larger than the image {self.height}x{self.width}; use "
                             f"--patch <= {min(self.height, self.width)}")

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
                             f"multiples of the scale {factor} (the LR condition is cropped per patch); e.g. --patch "
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


# ---------------------------------------------------------------------------------------------------- estimators

def _bicubic(lq: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """y0 = bicubic(lq) as ResShiftDiffusion.sample and training build it."""
    if tuple(lq.shape[-2:]) == tuple(size):
        return lq.clone()
    return F.interpolate(lq, size=size, mode="bicubic", align_corners=False)


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
        self.threshold, self.block, self.mode = float(threshold), _int(block, "block"), mode
        self.assumptions = (f"quadtree estimator: D = share of {self.block}x{self.block} LR blocks with range "
                            f"{'<=' if mode == 'paper' else '<'} {self.threshold:g} (QDM Alg. 1, {mode} mode) "
                            + ASSUMED,)

    def __call__(self, lq, grid, sf, coarse=None):
        from qdm.quadtree import block_ranges

        lr = grid.scaled(sf)
        if lr.patch % self.block:
            raise ValueError(f"the LR patch side {lr.patch} is not a multiple of the quadtree block {self.block}; "
                             f"use --patch a multiple of {self.block * sf}")
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
        y0 = _bicubic(lq, (grid.height, grid.width))
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
        y0 = _bicubic(lq, (grid.height, grid.width))
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


# --------------------------------------------------------------------------------------------------------- policy

def _floats(values, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers, got {values!r}") from None
    if any(not math.isfinite(v) for v in out):
        raise ValueError(f"{name} must be finite numbers, got {values!r}")
    return out


def _ints(values, name: str) -> tuple[int, ...]:
    vals = tuple(values)
    if not vals or any(isinstance(v, bool) or not isinstance(v, int) for v in vals):
        raise ValueError(f"{name} must be a non-empty list of integers, got {values!r}")
    return vals


@dataclass(frozen=True)
class GroupPolicy:
    """Per-patch groups from D and a (t_start, n_steps) schedule per group; group 0 is the easiest.

    Exactly one of ``thresholds`` (K - 1 values, strictly decreasing in [0, 1]: group g holds γ_g <= D < γ_{g-1})
    and ``quantiles`` (K fractions summing to 1: the easiest fraction of each image's patches goes to group 0, …).
    ``t_start`` must increase strictly with difficulty; ``assumed`` lists the values that are qdm-bench defaults.
    """

    t_start: tuple[int, ...]
    n_steps: tuple[int, ...]
    thresholds: tuple[float, ...] | None = None
    quantiles: tuple[float, ...] | None = None
    names: tuple[str, ...] | None = None
    assumed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Validate lengths, ranges and ordering."""
        t_start, n_steps = _ints(self.t_start, "t_start"), _ints(self.n_steps, "n_steps")
        object.__setattr__(self, "t_start", t_start)
        object.__setattr__(self, "n_steps", n_steps)
        k = len(t_start)
        if len(n_steps) != k:
            raise ValueError(f"give one step count per group: {k} t_start values but {len(n_steps)} step counts")
        if any(t < 0 for t in t_start):
            raise ValueError(f"t_start values must be >= 0, got {t_start}")
        if any(b <= a for a, b in zip(t_start, t_start[1:])):
            raise ValueError(f"t_start must increase strictly with difficulty (easy → hard), got {t_start}; "
                             "e.g. 3,8,14")
        if any(n < 1 for n in n_steps):
            raise ValueError(f"every group needs at least 1 step, got {n_steps}")
        if (self.thresholds is None) == (self.quantiles is None):
            raise ValueError("give exactly one of thresholds (γ on D) or quantiles (fraction per group)")
        if self.thresholds is not None:
            th = _floats(self.thresholds, "thresholds")
            if len(th) != k - 1:
                raise ValueError(f"{k} groups need {k - 1} thresholds, got {len(th)} ({th})")
            if any(not 0.0 <= v <= 1.0 for v in th):
                raise ValueError(f"thresholds must lie in [0, 1] (D = 1 is easy), got {th}")
            if any(b >= a for a, b in zip(th, th[1:])):
                raise ValueError(f"thresholds must decrease strictly (γ1 > γ2 > …, easy → hard), got {th}; "
                                 f"e.g. {','.join(f'{v:g}' for v in sorted(th, reverse=True))}")
            object.__setattr__(self, "thresholds", th)
        else:
            q = _floats(self.quantiles, "quantiles")
            if len(q) != k:
                raise ValueError(f"{k} groups need {k} quantiles (fractions), got {len(q)} ({q})")
            if any(not 0.0 <= v <= 1.0 for v in q) or abs(sum(q) - 1.0) > 1e-6:
                raise ValueError(f"quantiles must be fractions in [0, 1] summing to 1, got {q}; e.g. 0.5,0.3,0.2")
            object.__setattr__(self, "quantiles", q)
        names = self.names or (GROUP_NAMES if k == 3 else tuple(f"g{i}" for i in range(k)))
        if len(names) != k:
            raise ValueError(f"give one name per group ({k}), got {names}")
        object.__setattr__(self, "names", tuple(names))

    @classmethod
    def default(cls, schedule_len: int = 15, uniform_steps: int | None = None, mode: str = "thresholds",
                thresholds: Sequence[float] | None = None, quantiles: Sequence[float] | None = None,
                t_start: Sequence[int] | None = None, n_steps: Sequence[int] | None = None) -> "GroupPolicy":
        """A 3-group policy in the spirit of PatchScaler; every value not given is a default marked [assumed].

        ``schedule_len`` T is the native schedule length (start indices lie in [0, T)); ``uniform_steps`` the NFE
        of uniform sampling (default T).  Defaults: t_start = round((0.2, 0.6, 1.0)·(T - 1)), N = (2,
        round(0.4·N_uniform), N_uniform), thresholds (0.9, 0.6) or quantiles (0.5, 0.3, 0.2).
        """
        if mode not in ("thresholds", "quantiles"):
            raise ValueError(f"unknown policy {mode!r}; use thresholds or quantiles")
        t_len = _int(schedule_len, "schedule_len", 2)
        nu = _int(uniform_steps if uniform_steps is not None else t_len, "uniform_steps")
        k = len(t_start) if t_start is not None else len(n_steps) if n_steps is not None else 3
        assumed = []
        if t_start is None:
            if k != 3:
                raise ValueError(f"give t_start for {k} groups (defaults exist only for 3)")
            t_start = tuple(_round(f * (t_len - 1)) for f in DEFAULT_T_FRACTIONS)
            assumed.append(f"t_start = {','.join(map(str, t_start))} (round((0.2, 0.6, 1.0)·(T-1)), T = {t_len}) "
                           + ASSUMED)
        if n_steps is None:
            if len(t_start) != 3:
                raise ValueError(f"give n_steps for {len(t_start)} groups (defaults exist only for 3)")
            n_steps = (2, max(2, _round(DEFAULT_MEDIUM_FRACTION * nu)), nu)
            n_steps = tuple(min(n, t + 1) for n, t in zip(n_steps, t_start))
            assumed.append(f"n_steps = {','.join(map(str, n_steps))} (PatchScaler Fig. 1(a): 2 for simple, up to "
                           f"{nu} for hard; medium {DEFAULT_MEDIUM_FRACTION:g}·{nu}) " + ASSUMED)
        if mode == "thresholds" and thresholds is None:
            thresholds = DEFAULT_THRESHOLDS if len(t_start) == 3 else None
            if thresholds is None:
                raise ValueError(f"give thresholds for {len(t_start)} groups (defaults exist only for 3)")
            assumed.append(f"thresholds γ = {','.join(f'{v:g}' for v in thresholds)} on D " + ASSUMED)
        if mode == "quantiles" and quantiles is None:
            quantiles = DEFAULT_QUANTILES if len(t_start) == 3 else tuple([1.0 / len(t_start)] * len(t_start))
            assumed.append(f"quantiles = {','.join(f'{v:g}' for v in quantiles)} of the patches per group " + ASSUMED)
        return cls(t_start=tuple(t_start), n_steps=tuple(n_steps),
                   thresholds=tuple(thresholds) if mode == "thresholds" else None,
                   quantiles=tuple(quantiles) if mode == "quantiles" else None, assumed=tuple(assumed))

    @property
    def mode(self) -> str:
        """"thresholds" or "quantiles"."""
        return "thresholds" if self.thresholds is not None else "quantiles"

    @property
    def num_groups(self) -> int:
        """K."""
        return len(self.t_start)

    def table(self) -> dict[int, tuple[int, int]]:
        """{g: (t_start_g, n_steps_g)}."""
        return {g: (t, n) for g, (t, n) in enumerate(zip(self.t_start, self.n_steps))}

    def check_schedule(self, schedule_len: int) -> None:
        """Raise ValueError unless every t_start lies in [0, T) and n_steps <= t_start + 1."""
        for g, (t, n) in self.table().items():
            if t >= schedule_len:
                raise ValueError(f"t_start {t} of group {self.names[g]} is outside the schedule [0, {schedule_len}); "
                                 f"use --t-start values <= {schedule_len - 1}")
            if n > t + 1:
                raise ValueError(f"group {self.names[g]} cannot take {n} steps from t_start {t} (at most "
                                 f"{t + 1}); lower --steps or raise --t-start")

    def assign(self, difficulty: torch.Tensor) -> torch.Tensor:
        """Group id per patch, (B, Hp, Wp) long, from D (B, Hp, Wp)."""
        if difficulty.dim() != 3:
            raise ValueError(f"difficulty must be (B, Hp, Wp), got {tuple(difficulty.shape)}")
        if self.thresholds is not None:
            th = torch.tensor(self.thresholds, dtype=difficulty.dtype, device=difficulty.device)
            return (difficulty[..., None] < th).sum(-1)
        b, hp, wp = difficulty.shape
        m = hp * wp
        order = torch.sort(-difficulty.reshape(b, m), dim=1, stable=True).indices  # easiest first
        bounds = torch.tensor([_round(c * m) for c in itertools.accumulate(self.quantiles[:-1])],
                              device=difficulty.device)
        rank_group = torch.searchsorted(bounds, torch.arange(m, device=difficulty.device), right=True)
        groups = torch.empty(b, m, dtype=torch.long, device=difficulty.device)
        groups.scatter_(1, order, rank_group.expand(b, m))
        return groups.reshape(b, hp, wp)

    def describe(self) -> str:
        """One line for reports."""
        rule = (f"thresholds γ={','.join(f'{v:g}' for v in self.thresholds)}" if self.thresholds is not None else
                f"quantiles {','.join(f'{v:g}' for v in self.quantiles)}")
        return f"{rule}; " + ", ".join(f"{n}: t_start {t}, N {s}" for n, t, s in
                                        zip(self.names, self.t_start, self.n_steps))


# ------------------------------------------------------------------------------------------------------- families

def respace(t_start: int, n_steps: int) -> list[int]:
    """n_steps original indices from t_start down to 0, evenly spaced (both ends included; [t_start] for 1 step)."""
    t_start, n_steps = _int(t_start, "t_start", 0), _int(n_steps, "n_steps")
    if n_steps > t_start + 1:
        raise ValueError(f"cannot take {n_steps} distinct steps from t_start {t_start}; use at most {t_start + 1}")
    if n_steps == 1:
        return [t_start]
    return [_round(t_start * (1 - k / (n_steps - 1))) for k in range(n_steps)]


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _first(out):
    """A model's prediction (the first element when it returns a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class ResShiftFamily:
    """ResShift-family steps (QDM, U-Net, DiT, Swin-U-Net, …): x̂0-predicting models on a residual-shifting chain.

    Shortcut: x_τ = x̃0 + η_τ(y0 - x̃0) + κ√η_τ·ε (x̃0 = y0: ResShift started at τ).  Step t → s < t (generalised
    posterior): mean (η_s/η_t)·x_t + (1 - η_s/η_t)·x̂0, variance κ²·(η_s/η_t)·(η_t - η_s); the last step returns x̂0.
    For adjacent steps this is exactly :meth:`qdm.diffusion.ResShiftDiffusion.p_step` (full mask).  ``residual``:
    the model predicts x0 - y0 (x̂0 = y0 + output); ``clip_x0`` clamps x̂0 to [-1, 1].  ``sampler`` (default the
    diffusion) provides ``.sample`` for the uniform baseline.
    """

    name = "resshift"

    def __init__(self, diffusion=None, residual: bool = False, clip_x0: bool = False, sampler: Any = None):
        from qdm.diffusion import ResShiftDiffusion

        self.diffusion = diffusion if diffusion is not None else ResShiftDiffusion()
        self.residual, self.clip_x0 = bool(residual), bool(clip_x0)
        self.sampler = sampler if sampler is not None else self.diffusion
        self.etas = self.diffusion.schedule.etas  # float64
        self.kappa = self.diffusion.kappa
        self.assumptions: tuple[str, ...] = ()

    @property
    def schedule_len(self) -> int:
        """T: timestep indices are 0 … T - 1."""
        return self.diffusion.num_steps

    @property
    def uniform_steps(self) -> int:
        """NFE of uniform sampling."""
        return self.diffusion.num_steps

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] → the model's data range (identity)."""
        return x

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """The model's data range → [-1, 1] (identity)."""
        return x

    def init(self, x0: torch.Tensor, y0: torch.Tensor, t: int, generator=None) -> torch.Tensor:
        """Shortcut start x_t = x̃0 + η_t(y0 - x̃0) + κ√η_t·ε."""
        eta = float(self.etas[t])
        std = torch.tensor(self.kappa * float(self.diffusion.schedule.sqrt_etas[t]), dtype=y0.dtype, device=y0.device)
        return x0 + eta * (y0 - x0) + std * _randn(y0, generator)

    def start(self, y0: torch.Tensor, t: int) -> torch.Tensor:
        """The noise-free state at t from x̃0 = y0 (for a one-shot coarse estimate): y0."""
        return y0

    def call(self, model: Callable, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor,
             y0: torch.Tensor) -> torch.Tensor:
        """x̂0 = model(scale_input(x_t, t), t, lq, mask=None) (+ y0 for residual models, clamped with clip_x0)."""
        out = _first(model(self.diffusion.scale_input(x, t), t, lq, mask=None))
        x0 = y0 + out if self.residual else out
        return x0.clamp(-1, 1) if self.clip_x0 else x0

    def step(self, x: torch.Tensor, x0_hat: torch.Tensor, t: int, s: int | None, generator=None) -> torch.Tensor:
        """x_t → x_s (s < t) from x̂0; s None: x̂0 (the end of the chain)."""
        if s is None:
            return x0_hat
        eta_t, eta_s = self.etas[t], self.etas[s]
        c1 = (eta_s / eta_t).to(x.dtype)
        c2 = ((eta_t - eta_s) / eta_t).to(x.dtype)
        var = (self.kappa ** 2 * eta_s / eta_t * (eta_t - eta_s)).to(x.dtype)
        noise = _randn(x, generator)
        return c1.to(x.device) * x + c2.to(x.device) * x0_hat + torch.sqrt(var).to(x.device) * noise

    def describe(self) -> str:
        """One line for reports."""
        extra = (", residual x̂0 = y0 + output" if self.residual else "") + (", x̂0 clamped" if self.clip_x0 else "")
        return f"{self.name} (T={self.schedule_len}, κ={self.kappa:g}{extra})"


def _data_range(diffusion: Any) -> tuple[float, float]:
    """The model-space range of a DDPM process: its ``data_range`` attribute, else [-1, 1]."""
    return tuple(float(v) for v in getattr(diffusion, "data_range", (-1.0, 1.0)))


class DDIMFamily:
    """DDIM (η = 0) steps for ε-predicting DDPM backbones, e.g. BI-DiffSR (spec §4).

    ``betas`` (T,) defines ᾱ; ``data_range`` is the model's x0 range ([-1, 1] images are mapped to it);
    ``clip_range`` clamps x̂0 (diffusers' clip_sample; None: no clamp).  Shortcut (SDEdit, PatchScaler "Eq. 6"
    [inferred]): x_τ = √ᾱ_τ·x̃0 + √(1 - ᾱ_τ)·ε.  Step t → s: x̂0 = (x_t - √(1-ᾱ_t)·ε̂)/√ᾱ_t, x_s = √ᾱ_s·x̂0 +
    √(1-ᾱ_s)·ε̂; the last step returns x̂0.  The model is called as model(x_t, t, lq, mask=None) with the original
    integer t, one t per batch (BI-DiffSR's requirement).  ``sampler`` provides ``.sample`` for the uniform baseline.
    """

    name = "ddim"

    def __init__(self, betas: torch.Tensor, uniform_steps: int = 50, data_range: tuple[float, float] = (-1.0, 1.0),
                 clip_range: tuple[float, float] | None = None, sampler: Any = None):
        betas = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
        if betas.numel() < 2 or bool(((betas <= 0) | (betas >= 1)).any()):
            raise ValueError("betas must be a 1-D schedule of >= 2 values in (0, 1)")
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ValueError(f"data_range must be (low, high) with high > low, got {data_range}")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self._uniform = _int(uniform_steps, "uniform_steps")
        self.data_range = (lo, hi)
        self.clip_range = None if clip_range is None else tuple(float(v) for v in clip_range)
        self.sampler = sampler
        self.assumptions = ("DDIM: SDEdit shortcut x = √ᾱ_τ·y0 + √(1-ᾱ_τ)·ε (PatchScaler Eq. 6 [inferred]), η = 0 "
                            "steps evenly respaced from t_start to 0 " + ASSUMED,)

    @classmethod
    def from_diffusion(cls, diffusion: Any, uniform_steps: int | None = None) -> "DDIMFamily":
        """Duck-typed: a process with ``betas`` and optionally ``num_steps``, ``data_range``, ``clip_range``."""
        betas = getattr(diffusion, "betas", None)
        if betas is None:
            raise ValueError(f"{type(diffusion).__name__} has no betas; the DDIM family needs a DDPM beta schedule")
        steps = uniform_steps or getattr(diffusion, "num_steps", None) or 50
        return cls(betas, uniform_steps=int(steps), data_range=_data_range(diffusion),
                   clip_range=getattr(diffusion, "clip_range", None), sampler=diffusion)

    @property
    def schedule_len(self) -> int:
        """T: DDPM timesteps are 0 … T - 1."""
        return int(self.betas.numel())

    @property
    def uniform_steps(self) -> int:
        """NFE of uniform DDIM sampling."""
        return self._uniform

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] → data_range."""
        lo, hi = self.data_range
        return lo + (x + 1) * ((hi - lo) / 2)

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        """data_range → [-1, 1]."""
        lo, hi = self.data_range
        return (x - lo) * (2 / (hi - lo)) - 1

    def _abar(self, t: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(√ᾱ_t, √(1 - ᾱ_t)) in like's dtype and device."""
        a = self.alphas_cumprod[t]
        return a.sqrt().to(like), (1 - a).sqrt().to(like)

    def init(self, x0: torch.Tensor, y0: torch.Tensor, t: int, generator=None) -> torch.Tensor:
        """SDEdit start x_t = √ᾱ_t·x̃0 + √(1 - ᾱ_t)·ε (x̃0 in the model's range)."""
        sa, sb = self._abar(t, x0)
        return sa * x0 + sb * _randn(x0, generator)

    def start(self, y0: torch.Tensor, t: int) -> torch.Tensor:
        """The noise-free state at t from x̃0 = y0: √ᾱ_t·y0."""
        return self._abar(t, y0)[0] * y0

    def call(self, model: Callable, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor,
             y0: torch.Tensor) -> torch.Tensor:
        """ε̂ = model(x_t, t, lq, mask=None)."""
        return _first(model(x, t, lq, mask=None))

    def step(self, x: torch.Tensor, eps: torch.Tensor, t: int, s: int | None, generator=None) -> torch.Tensor:
        """Deterministic DDIM update t → s; s None: x̂0."""
        sa, sb = self._abar(t, x)
        x0 = (x - sb * eps) / sa
        if self.clip_range is not None:
            x0 = x0.clamp(*self.clip_range)
        if s is None:
            return x0
        sa_s, sb_s = self._abar(s, x)
        return sa_s * x0 + sb_s * eps

    def describe(self) -> str:
        """One line for reports."""
        return f"ddim (T={self.schedule_len}, η=0, data range {self.data_range}, x̂0 clamp {self.clip_range})"


def _family_of(diffusion: Any, info: Any = None):
    """The family for a diffusion process object (ResShift, the dual-domain chain, or any DDPM with betas)."""
    from qdm.diffusion import ResShiftDiffusion

    if isinstance(diffusion, (ResShiftFamily, DDIMFamily)):
        return diffusion
    if isinstance(diffusion, ResShiftDiffusion):
        return ResShiftFamily(diffusion)
    if hasattr(diffusion, "sampler_process"):  # the dual-domain chain: residual x0 - y0, x̂0 clamped, own η and κ
        fam = ResShiftFamily(diffusion.sampler_process(), residual=True, clip_x0=True, sampler=diffusion)
        fam.name = "dualdomain"
        fam.assumptions = ("dual-domain: the exact ResShift posterior between respaced steps (the project's own "
                           "posterior is the uniform baseline's); its DCT and Fourier encoding are global to each "
                           "patch, so outputs depend on the patch size " + ASSUMED,)
        return fam
    if getattr(diffusion, "betas", None) is not None:
        return DDIMFamily.from_diffusion(diffusion, getattr(info, "num_steps", None))
    raise ValueError(f"PGS has no adapter for {type(diffusion).__name__}; pass a ResShiftDiffusion, an object with "
                     "DDPM betas (DDIM), or a ResShiftFamily / DDIMFamily")


def family_for(model: Any = None, info: Any = None, diffusion: Any = None, kappa: float | None = None):
    """The sampler family of a backbone, from ``diffusion`` if given, else from ``info.diffusion`` (``info`` defaults
    to ``model.qdm_bench_info``) through :func:`qdm_bench.diffusions.diffusion_for` (``kappa``: a checkpoint's κ).

    resshift → :class:`ResShiftFamily`; dualdomain → ResShiftFamily with residual prediction (its own η, κ);
    bi-diffsr or any process with ``betas`` → :class:`DDIMFamily`.
    """
    info = info or getattr(model, "qdm_bench_info", None)
    if diffusion is None:
        kind = getattr(info, "diffusion", "resshift")
        if info is not None:
            from qdm_bench.diffusions import diffusion_for

            diffusion = diffusion_for(info, kappa)
        elif kind == "resshift":
            from qdm.diffusion import ResShiftDiffusion, eta_schedule

            diffusion = ResShiftDiffusion(eta_schedule(kappa=2.0 if kappa is None else kappa))
        else:
            raise ValueError(f"PGS has no adapter for diffusion {kind!r}; pass diffusion= a ResShiftDiffusion or an "
                             "object with DDPM betas")
    return _family_of(diffusion, info)


# --------------------------------------------------------------------------------------------------------- report

@dataclass
class GroupStats:
    """One group's size and schedule."""

    group: int
    name: str
    t_start: int
    n_steps: int
    timesteps: list[int]
    patches: int  # M_g
    patch_evals: int  # M_g·N_g
    model_calls: int  # ⌈M_g/B⌉·N_g


@dataclass
class PGSReport:
    """Counts and costs of one PGS run next to uniform full-image sampling."""

    family: str
    estimator: str
    policy: str
    image_size: tuple[int, int]
    batch: int
    scale: int
    patch: int
    overlap: int
    window: str
    grid: tuple[int, int]
    patches: int  # M (over the whole image batch)
    coverage: float  # M·P² / (B·H·W): > 1 with overlap
    patch_batch: int  # B, the most patches per model call
    groups: list[GroupStats]
    patch_evals: int  # Σ M_g·N_g
    full_image_eq_nfe: float  # Σ (M_g/M)·N_g
    pixel_eq_nfe: float  # Σ M_g·N_g·P² / (B·H·W): overlap-aware
    model_calls: int  # Σ ⌈M_g/B⌉·N_g
    overhead_passes: int  # extra full-image passes (estimator / coarse estimate)
    uniform_nfe: int
    uniform_model_calls: int
    peak_memory_bytes: int | None = None
    memory_method: str | None = None
    wall_time_s: float | None = None
    device: str = "cpu"
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (groups as a list of dicts)."""
        d = asdict(self)
        d["image_size"], d["grid"] = list(self.image_size), list(self.grid)
        return d


@dataclass
class PGSResult:
    """SR image in [-1, 1] (B, C, H, W), the report, the group map and difficulty map (B, Hp, Wp)."""

    sr: torch.Tensor
    report: PGSReport
    group_map: torch.Tensor
    difficulty: torch.Tensor


def _measured(fn: Callable[[], Any], device: torch.device, memory: bool) -> tuple[Any, Any, float]:
    """Run fn once: (output, MemoryResult or None, wall seconds)."""
    from qdm_bench.measure import peak_memory_cpu, peak_memory_cuda

    box: list[Any] = []

    def run():
        box.append(fn())

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    mem = None
    if not memory:
        run()
    elif cuda:
        mem = peak_memory_cuda(run, device, warmup=0)
    else:
        mem = peak_memory_cpu(run, warmup=0)
    if cuda:
        torch.cuda.synchronize(device)
    return box[0], mem, time.perf_counter() - t0


def _check_lq(lq: torch.Tensor, sf: int) -> tuple[int, int]:
    if not isinstance(lq, torch.Tensor) or lq.dim() != 4 or not lq.is_floating_point():
        raise ValueError(f"lq must be a float (B, C, h, w) tensor in [-1, 1], got {getattr(lq, 'shape', lq)!r}")
    _int(sf, "sf")
    return lq.shape[-2] * sf, lq.shape[-1] * sf


# -------------------------------------------------------------------------------------------------------- sampler

class PatchGroupSampler:
    """PGS over any family: difficulty → groups → per-group batched patch sampling → blended SR image.

    ``patch`` and ``overlap`` are HR pixels (multiples of ``sf``; ``patch`` also of the backbone's input multiple);
    ``patch_batch`` caps the patches per model call, so peak memory follows it, not the image size.
    """

    def __init__(self, model: Callable, family=None, policy: GroupPolicy | None = None,
                 estimator: str | DifficultyEstimator = "quadtree", patch: int = 64, overlap: int = 16,
                 patch_batch: int = 16, window: str = "hann", sf: int = 4, multiple: int | None = None):
        self.model = model
        self.family = family if family is not None else family_for(model)
        self.policy = policy or GroupPolicy.default(self.family.schedule_len, self.family.uniform_steps)
        self.policy.check_schedule(self.family.schedule_len)
        self.estimator = make_estimator(estimator)
        self.patch, self.overlap = _int(patch, "patch"), _int(overlap, "overlap", 0)
        self.patch_batch = _int(patch_batch, "patch_batch")
        if window not in WINDOWS:
            raise ValueError(f"unknown blending window {window!r}; use one of {', '.join(WINDOWS)}")
        self.window, self.sf = window, _int(sf, "sf")
        self.multiple = multiple or self._model_multiple()
        if self.patch % self.multiple:
            raise ValueError(f"patch {self.patch} must be a multiple of the backbone's input multiple {self.multiple}; "
                             f"use --patch {max(self.multiple, self.patch // self.multiple * self.multiple)}")
        if self.patch % self.sf or self.overlap % self.sf:
            raise ValueError(f"patch {self.patch} and overlap {self.overlap} must be multiples of the scale {self.sf} "
                             "(the LR condition is cropped per patch)")

    def _model_multiple(self) -> int:
        """The input multiple of the backbone (its instance value, else the registry's, else 1)."""
        m = getattr(self.model, "input_multiple", None)
        info = getattr(self.model, "qdm_bench_info", None)
        return int(m or getattr(info, "multiple", 1) or 1)

    def grid(self, height: int, width: int) -> PatchGrid:
        """The HR patch grid for an image size."""
        return PatchGrid(height, width, self.patch, self.overlap)

    def assumptions(self) -> list[str]:
        """Every value of this run that the paper does not fix."""
        return [f"patch {self.patch} px, overlap {self.overlap} px, {self.window} blending " + ASSUMED,
                *self.policy.assumed, *self.estimator.assumptions, *getattr(self.family, "assumptions", ()),
                "shortcut init from y0 = bicubic(lq) (no GRM), dense backbone call per patch (mask=None) " + ASSUMED]

    def __call__(self, lq: torch.Tensor, *, seed: int | None = None, generator: torch.Generator | None = None,
                 coarse: torch.Tensor | None = None, x0_init: torch.Tensor | None = None, overhead_passes: int = 0,
                 measure_memory: bool = True) -> PGSResult:
        """Super-resolve lq (B, C, h, w) in [-1, 1] by sf; ``x0_init`` (HR, [-1, 1]) replaces y0 as x̃0.

        Randomness comes only from ``generator`` (or one seeded with ``seed`` on lq's device); groups run in order,
        each drawing its noise for all of its patches at once, so the result does not depend on ``patch_batch``.
        """
        height, width = _check_lq(lq, self.sf)
        generator = resolve_generator(seed, generator, lq.device)
        grid = self.grid(height, width)
        grid.scaled(self.sf)  # validates the LR crop
        with torch.no_grad():
            difficulty = self.estimator(lq, grid, self.sf, coarse)
            groups = self.policy.assign(difficulty)
            sr, mem, secs = _measured(lambda: self._sample(lq, grid, groups, generator, x0_init), lq.device,
                                      measure_memory)
        report = self._report(lq, grid, groups, mem, secs, overhead_passes + self.estimator.overhead_passes)
        return PGSResult(sr=sr, report=report, group_map=groups, difficulty=difficulty)

    def _sample(self, lq, grid: PatchGrid, groups, generator, x0_init) -> torch.Tensor:
        """All groups, then the blend; returns SR in [-1, 1]."""
        fam = self.family
        lq_p = grid.scaled(self.sf).patchify(lq)
        y0_p = fam.to_model(_bicubic(lq_p, (grid.patch, grid.patch)))
        x0_p = y0_p if x0_init is None else fam.to_model(grid.patchify(x0_init.to(lq)))
        flat = groups.reshape(-1)
        out = torch.empty_like(y0_p)
        for g, (t_start, n) in self.policy.table().items():
            idx = (flat == g).nonzero().squeeze(1)
            if idx.numel():
                out[idx] = self._run_group(lq_p[idx], y0_p[idx], x0_p[idx], respace(t_start, n), generator)
        return fam.from_model(grid.unpatchify(out, self.window)).clamp(-1, 1)

    def _run_group(self, lq, y0, x0, timesteps: list[int], generator) -> torch.Tensor:
        """One group's chain over its patches, model calls in batches of at most patch_batch; returns x̂0."""
        fam = self.family
        x = fam.init(x0, y0, timesteps[0], generator)
        for k, t in enumerate(timesteps):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            pred = torch.cat([fam.call(self.model, *chunk) for chunk in
                              zip(*(v.split(self.patch_batch) for v in (x, tt, lq, y0)))])
            x = fam.step(x, pred, t, timesteps[k + 1] if k + 1 < len(timesteps) else None, generator)
        return x

    def _report(self, lq, grid: PatchGrid, groups, mem, secs, overhead: int) -> PGSReport:
        """Counts from the group map (the costs the sampler incurred)."""
        b = lq.shape[0]
        m = groups.numel()
        stats = []
        for g, (t_start, n) in self.policy.table().items():
            mg = int((groups == g).sum())
            stats.append(GroupStats(g, self.policy.names[g], t_start, n, respace(t_start, n), mg, mg * n,
                                    math.ceil(mg / self.patch_batch) * n))
        evals = sum(s.patch_evals for s in stats)
        return PGSReport(
            family=self.family.describe(), estimator=self.estimator.describe(), policy=self.policy.describe(),
            image_size=(grid.height, grid.width), batch=b, scale=self.sf, patch=self.patch, overlap=self.overlap,
            window=self.window, grid=grid.shape, patches=m, coverage=grid.coverage, patch_batch=self.patch_batch,
            groups=stats, patch_evals=evals, full_image_eq_nfe=sum(s.patches * s.n_steps for s in stats) / m,
            pixel_eq_nfe=evals * self.patch ** 2 / (b * grid.height * grid.width),
            model_calls=sum(s.model_calls for s in stats), overhead_passes=overhead,
            uniform_nfe=self.family.uniform_steps, uniform_model_calls=self.family.uniform_steps,
            peak_memory_bytes=None if mem is None else int(mem.peak_bytes),
            memory_method=None if mem is None else mem.method, wall_time_s=secs, device=str(lq.device),
            assumptions=self.assumptions(),
        )


def uniform_sample(model: Callable, lq: torch.Tensor, family=None, sf: int = 4, seed: int | None = None,
                   measure_memory: bool = True) -> tuple[torch.Tensor, dict[str, Any]]:
    """Uniform full-image sampling for comparison: (SR in [-1, 1], {nfe, model_calls, wall_time_s, peak memory}).

    The family's own process samples when it has one (``family.sampler.sample``: ResShiftDiffusion.sample with a
    full mask, BI-DiffSR's 50-step DDIM, the dual-domain chain); otherwise DDIM from pure noise over
    ``uniform_steps`` evenly respaced steps from T - 1.
    """
    family = family if family is not None else family_for(model)
    _check_lq(lq, sf)
    generator = None if seed is None else torch.Generator(device=lq.device).manual_seed(int(seed))
    sampler = getattr(family, "sampler", None)

    def run() -> torch.Tensor:
        if sampler is not None and hasattr(sampler, "sample"):
            return sampler.sample(model, lq, sf=sf, generator=generator).sr
        y0 = family.to_model(_bicubic(lq, (lq.shape[-2] * sf, lq.shape[-1] * sf)))
        ts = respace(family.schedule_len - 1, family.uniform_steps)
        x = _randn(y0, generator)
        for k, t in enumerate(ts):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            x = family.step(x, family.call(model, x, tt, lq, y0), t, ts[k + 1] if k + 1 < len(ts) else None)
        return family.from_model(x).clamp(-1, 1)

    with torch.no_grad():
        sr, mem, secs = _measured(run, lq.device, measure_memory)
    return sr, {"nfe": family.uniform_steps, "model_calls": family.uniform_steps, "wall_time_s": secs,
                "peak_memory_bytes": None if mem is None else int(mem.peak_bytes),
                "memory_method": None if mem is None else mem.method}


def one_shot_coarse(model: Callable, lq: torch.Tensor, family=None, sf: int = 4) -> torch.Tensor:
    """A coarse HR estimate from one full-image pass at the last timestep on the noise-free prior mean (1 overhead
    pass; the input of the residual estimator).  Returns [-1, 1]."""
    family = family if family is not None else family_for(model)
    _check_lq(lq, sf)
    y0 = family.to_model(_bicubic(lq, (lq.shape[-2] * sf, lq.shape[-1] * sf)))
    t = family.schedule_len - 1
    x = family.start(y0, t)
    tt = torch.full((y0.shape[0],), t, dtype=torch.long, device=y0.device)
    with torch.no_grad():
        x0 = family.step(x, family.call(model, x, tt, lq, y0), t, None)
    return family.from_model(x0).clamp(-1, 1)


def group_map_text(group_map: torch.Tensor, symbols: str = ".o#") -> str:
    """The group map of the first image as text, one character per patch (default: . simple, o medium, # hard)."""
    g = group_map[0] if group_map.dim() == 3 else group_map
    k = int(g.max()) + 1 if g.numel() else 0
    chars = symbols if k <= len(symbols) else "0123456789abcdefghijklmnopqrstuvwxyz"
    return "\n".join("".join(chars[int(v)] for v in row) for row in g.tolist())
