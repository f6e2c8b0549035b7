"""Patch-adaptive group sampling (PGS), PatchScaler style, for backbones on a known process (docs/seed-systems.md §1.2, §3).

PatchScaler's premise: easy regions need few sampling steps, hard ones many.  PGS splits the HR-size image into
(overlapping) patches, scores each patch's difficulty, sorts the patches into groups and runs every group with its
own shortened schedule, starting late on a *shortcut path* (the coarse estimate diffused to the group's start
timestep), with all patches of a group batched together.  The pieces:

1. **Difficulty estimators** (``range``, ``quadtree``, ``gradient``, ``residual``; :func:`make_estimator`, in
   :mod:`baselines.pgs.estimators`): (lq, grid, sf, coarse) → D ∈ [0, 1]^(B × Hp × Wp) on the patch grid, 1 = easy.
   All are training-free proxies for PatchScaler's GRM confidence (which needs a trained GRM).
2. **Group policy** (:class:`GroupPolicy`, :mod:`baselines.pgs.policy`): thresholds γ1 > γ2 > … on D, or a fixed
   fraction of patches per group (quantiles); a group id per patch and a table {g: (t_start_g, n_steps_g)}, t_start
   increasing with difficulty.
3. **Diffusion families** (:mod:`baselines.pgs.families`; shortcut init + respaced steps, both the process's own
   functions): :class:`ResShiftFamily` (QDM, U-Net, DiT, Swin-U-Net, every model on the ResShift process; the
   dual-domain chain) and :class:`DDIMFamily` (ε-predicting DDPM backbones such as BI-DiffSR).  :func:`family_of`
   maps a process object to its family.  Models are always called with their *original* timestep index, so a
   checkpoint trained on the full schedule works unchanged.
4. :class:`PatchGroupSampler` (:mod:`baselines.pgs.sampler`): patchify (:class:`PatchGrid`), run each group in patch
   batches, blend the patches back (Hann or linear windows, weights normalised per pixel) and return the SR image
   with a :class:`PGSReport` of counts and costs.

Costs (:class:`PGSReport`): M_g patches per group; patch evaluations Σ M_g·N_g; the full-image-equivalent NFE
Σ (M_g/M)·N_g (comparable to the uniform NFE only without overlap: overlapping patches cover more than the image);
the overlap-aware pixel-equivalent NFE Σ M_g·N_g·P²/(H·W); model calls Σ ⌈M_g/B⌉·N_g; overhead passes; wall time
and, when a ``measure`` hook is given (the harness passes a peak-memory one), peak memory of the run.

Everything the paper does not fix (the patch size and overlap, the γ thresholds, the per-group start timesteps and
step counts, the estimators' normalisation) is a choice of this implementation and is listed as ``[assumed]`` in the
report.  The package stands alone: looking a family up for a registered model is the harness's job.
"""
from baselines.pgs.estimators import (
    ESTIMATORS, DifficultyEstimator, GradientEstimator, QuadtreeEstimator, RangeEstimator, ResidualEstimator,
    make_estimator,
)
from baselines.pgs.families import DDIMFamily, ResShiftFamily, as_family, family_of, is_family
from baselines.pgs.grid import WINDOWS, PatchGrid, blend_window
from baselines.pgs.policy import GroupPolicy, respace
from baselines.pgs.sampler import (
    GroupStats, MeasureHook, PatchGroupSampler, PGSReport, PGSResult, group_map_text, one_shot_coarse, uniform_sample,
)
from baselines.pgs.util import ASSUMED

__all__ = [
    "ASSUMED", "WINDOWS", "PatchGrid", "blend_window", "DifficultyEstimator", "RangeEstimator", "QuadtreeEstimator",
    "GradientEstimator", "ResidualEstimator", "ESTIMATORS", "make_estimator", "GroupPolicy", "respace",
    "ResShiftFamily", "DDIMFamily", "family_of", "as_family", "is_family", "MeasureHook", "GroupStats", "PGSReport",
    "PGSResult", "PatchGroupSampler", "uniform_sample", "one_shot_coarse", "group_map_text",
]
