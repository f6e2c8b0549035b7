"""The PGS sampler: difficulty → groups → batched per-group patch chains → blended SR image, with its cost report."""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import torch

from baselines.pgs.estimators import DifficultyEstimator, make_estimator
from baselines.pgs.families import as_family
from baselines.pgs.grid import WINDOWS, PatchGrid
from baselines.pgs.policy import GroupPolicy, respace
from baselines.pgs.util import ASSUMED, check_int
from qdm.sampling import bicubic_y0, resolve_generator, run_chain

__all__ = ["MeasureHook", "GroupStats", "PGSReport", "PGSResult", "PatchGroupSampler", "uniform_sample",
           "one_shot_coarse", "group_map_text"]

MeasureHook = Callable[[Callable[[], Any]], tuple[Any, Optional[int], Optional[str]]]
"""Runs the work once and returns (its output, peak memory bytes or None, the measuring method or None)."""


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


def _timed(work: Callable[[], Any], device: torch.device,
           measure: MeasureHook | None) -> tuple[Any, int | None, str | None, float]:
    """Run ``work`` once (through ``measure`` if given): (output, peak bytes, memory method, wall seconds).

    On CUDA the device is synchronised before and after, so the wall time covers the whole run.
    """
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    if measure is None:
        out, peak, method = work(), None, None
    else:
        out, peak, method = measure(work)
    if cuda:
        torch.cuda.synchronize(device)
    return out, None if peak is None else int(peak), method, time.perf_counter() - t0


def _pairs(timesteps: list[int]) -> list[tuple[int, int | None]]:
    """(t, next t) for every step of a respaced chain; the last step's next is None (it returns x̂0)."""
    return list(zip(timesteps, [*timesteps[1:], None]))


def _check_lq(lq: torch.Tensor, sf: int) -> tuple[int, int]:
    if not isinstance(lq, torch.Tensor) or lq.dim() != 4 or not lq.is_floating_point():
        raise ValueError(f"lq must be a float (B, C, h, w) tensor in [-1, 1], got {getattr(lq, 'shape', lq)!r}")
    check_int(sf, "sf")
    return lq.shape[-2] * sf, lq.shape[-1] * sf


# -------------------------------------------------------------------------------------------------------- sampler

class PatchGroupSampler:
    """PGS over any family: difficulty → groups → per-group batched patch sampling → blended SR image.

    ``family`` is required: a :class:`ResShiftFamily` / :class:`DDIMFamily` or a diffusion process object (turned
    into one by :func:`baselines.pgs.families.family_of`).  ``patch`` and ``overlap`` are HR pixels (multiples of
    ``sf``; ``patch`` also of the backbone's input multiple: ``multiple``, else ``model.input_multiple``, else 1);
    ``patch_batch`` caps the patches per model call, so peak memory follows it, not the image size.
    """

    def __init__(self, model: Callable, family=None, policy: GroupPolicy | None = None,
                 estimator: str | DifficultyEstimator = "quadtree", patch: int = 64, overlap: int = 16,
                 patch_batch: int = 16, window: str = "hann", sf: int = 4, multiple: int | None = None):
        self.model = model
        self.family = as_family(family, "PatchGroupSampler")
        self.policy = policy or GroupPolicy.default(self.family.schedule_len, self.family.uniform_steps)
        self.policy.check_schedule(self.family.schedule_len)
        self.estimator = make_estimator(estimator)
        self.patch, self.overlap = check_int(patch, "patch"), check_int(overlap, "overlap", 0)
        self.patch_batch = check_int(patch_batch, "patch_batch")
        if window not in WINDOWS:
            raise ValueError(f"unknown blending window {window!r}; use one of {', '.join(WINDOWS)}")
        self.window, self.sf = window, check_int(sf, "sf")
        self.multiple = int(multiple or getattr(model, "input_multiple", None) or 1)
        if self.patch % self.multiple:
            raise ValueError(f"patch {self.patch} must be a multiple of the backbone's input multiple {self.multiple}; "
                             f"use --patch-size {max(self.multiple, self.patch // self.multiple * self.multiple)}")
        if self.patch % self.sf or self.overlap % self.sf:
            raise ValueError(f"patch {self.patch} and overlap {self.overlap} must be multiples of the scale {self.sf} "
                             "(the LR condition is cropped per patch)")

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
                 measure: MeasureHook | None = None) -> PGSResult:
        """Super-resolve lq (B, C, h, w) in [-1, 1] by sf; ``x0_init`` (HR, [-1, 1]) replaces y0 as x̃0.

        ``measure`` (e.g. the harness's peak-memory hook) runs the sampling and reports its peak memory; without it
        the report has the wall time only (memory fields None).

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
            sr, peak, method, secs = _timed(lambda: self._sample(lq, grid, groups, generator, x0_init), lq.device,
                                            measure)
        report = self._report(lq, grid, groups, (peak, method), secs,
                              overhead_passes + self.estimator.overhead_passes)
        return PGSResult(sr=sr, report=report, group_map=groups, difficulty=difficulty)

    def _sample(self, lq, grid: PatchGrid, groups, generator, x0_init) -> torch.Tensor:
        """All groups, then the blend; returns SR in [-1, 1]."""
        fam = self.family
        lq_p = grid.scaled(self.sf).patchify(lq)
        y0_p = fam.to_model(bicubic_y0(lq_p, size=(grid.patch, grid.patch)))
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

        def step(ts: tuple[int, int | None], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            t, s = ts
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            pred = torch.cat([fam.call(self.model, *chunk) for chunk in
                              zip(*(v.split(self.patch_batch) for v in (x, tt, lq, y0)))])
            return fam.step(x, pred, t, s, generator), pred

        return run_chain(step, fam.init(x0, y0, timesteps[0], generator), _pairs(timesteps)).x

    def _report(self, lq, grid: PatchGrid, groups, mem: tuple[int | None, str | None], secs: float,
                overhead: int) -> PGSReport:
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
            peak_memory_bytes=mem[0], memory_method=mem[1], wall_time_s=secs, device=str(lq.device),
            assumptions=self.assumptions(),
        )


def uniform_sample(model: Callable, lq: torch.Tensor, family=None, sf: int = 4, seed: int | None = None,
                   measure: MeasureHook | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Uniform full-image sampling for comparison: (SR in [-1, 1], {nfe, model_calls, wall_time_s, peak memory}).

    The family's own process samples when it has one (``family.sampler.sample``: ResShiftDiffusion.sample with a
    full mask, BI-DiffSR's 50-step DDIM, the dual-domain chain); otherwise DDIM from pure noise over
    ``uniform_steps`` evenly respaced steps from T - 1.  ``family`` (a family or a process) is required;
    ``measure`` as for :meth:`PatchGroupSampler.__call__`.
    """
    family = as_family(family, "uniform_sample")
    _check_lq(lq, sf)
    generator = resolve_generator(seed, None, lq.device)
    sampler = getattr(family, "sampler", None)

    def run() -> torch.Tensor:
        if sampler is not None and hasattr(sampler, "sample"):
            return sampler.sample(model, lq, sf=sf, generator=generator).sr
        y0 = family.to_model(bicubic_y0(lq, sf))

        def step(ts: tuple[int, int | None], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            t, s = ts
            pred = family.call(model, x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device), lq, y0)
            return family.step(x, pred, t, s), pred

        x_T = torch.randn(y0.shape, generator=generator, device=y0.device, dtype=y0.dtype)
        x = run_chain(step, x_T, _pairs(respace(family.schedule_len - 1, family.uniform_steps))).x
        return family.from_model(x).clamp(-1, 1)

    with torch.no_grad():
        sr, peak, method, secs = _timed(run, lq.device, measure)
    return sr, {"nfe": family.uniform_steps, "model_calls": family.uniform_steps, "wall_time_s": secs,
                "peak_memory_bytes": peak, "memory_method": method}


def one_shot_coarse(model: Callable, lq: torch.Tensor, family=None, sf: int = 4) -> torch.Tensor:
    """A coarse HR estimate from one full-image pass at the last timestep on the noise-free prior mean (1 overhead
    pass; the input of the residual estimator).  ``family`` (a family or a process) is required.  Returns [-1, 1]."""
    family = as_family(family, "one_shot_coarse")
    _check_lq(lq, sf)
    y0 = family.to_model(bicubic_y0(lq, sf))
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
