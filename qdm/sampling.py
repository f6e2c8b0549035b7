"""The sampling skeleton every sampler shares: input checks, randomness, y0, the reverse-chain loop and its result."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["SampleResult", "ChainOutput", "check_sr_input", "resolve_generator", "bicubic_y0", "ones_masks",
           "mask_free_result", "run_chain"]


@dataclass
class SampleResult:
    """Output of a sampler's ``sample`` (e.g. :meth:`qdm.diffusion.ResShiftDiffusion.sample`). Densities are per
    sample, shape (B,)."""

    sr: torch.Tensor
    y0: torch.Tensor
    diffusion_mask: torch.Tensor
    model_mask: torch.Tensor
    density: torch.Tensor  # fraction of ones of the model (patch) mask
    diffusion_density: torch.Tensor  # fraction of ones of the diffusion mask
    window_density: torch.Tensor | None = None  # selected windows / n_w, if the model has `window`
    trajectory: list[torch.Tensor] | None = None  # x_T, x_{T-1}, …, x_0 (unclamped), if requested
    predictions: list[torch.Tensor] | None = None  # x̂0 at steps T-1 … 0, if requested


@dataclass
class ChainOutput:
    """What :func:`run_chain` returns: the final state and, if requested, the states and predictions on the way."""

    x: torch.Tensor
    trajectory: list[torch.Tensor] | None = None  # x_T, then the state after every step
    predictions: list[Any] | None = None  # the prediction of every step


def check_sr_input(lq: torch.Tensor, sf: int) -> None:
    """Raise ValueError unless ``sf`` is a positive integer and ``lq`` is a (B, C, h, w) batch (every sampler)."""
    if isinstance(sf, bool) or not isinstance(sf, int) or sf < 1:
        raise ValueError(f"sf must be a positive integer, got {sf!r}")
    if lq.dim() != 4:
        raise ValueError(f"lq must be (B, C, h, w), got shape {tuple(lq.shape)}")


def resolve_generator(seed: int | None, generator: torch.Generator | None,
                      device: torch.device | str) -> torch.Generator | None:
    """A sampler's randomness: ``generator``, or a new one on ``device`` seeded with ``seed`` (not both)."""
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both")
    if seed is not None:
        return torch.Generator(device=device).manual_seed(int(seed))
    return generator


def bicubic_y0(lq: torch.Tensor, sf: int = 1, size: Sequence[int] | None = None) -> torch.Tensor:
    """y0 = ``F.interpolate(lq, size, mode="bicubic", align_corners=False)`` with size (h·sf, w·sf) or ``size``;
    ``lq.clone()`` when that is lq's own size (sf = 1)."""
    size = (lq.shape[-2] * sf, lq.shape[-1] * sf) if size is None else tuple(int(v) for v in size)
    if tuple(size) == tuple(lq.shape[-2:]):
        return lq.clone()
    return F.interpolate(lq, size=size, mode="bicubic", align_corners=False)


def ones_masks(batch: int, size: Sequence[int], like: torch.Tensor,
               down_patch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Full masks: (diffusion mask (B, 1, H, W), model mask (B, H/down_patch, W/down_patch)), all ones, in like's
    dtype and device."""
    h, w = (int(v) for v in size)
    kw = dict(dtype=like.dtype, device=like.device)
    return torch.ones(batch, 1, h, w, **kw), torch.ones(batch, h // down_patch, w // down_patch, **kw)


def mask_free_result(sr: torch.Tensor, y0: torch.Tensor, trajectory: list[torch.Tensor] | None = None,
                     predictions: list[torch.Tensor] | None = None) -> SampleResult:
    """The result of a sampler without masks: mask fields all ones at y0's size, densities 1."""
    b = y0.shape[0]
    diffusion_mask, model_mask = ones_masks(b, y0.shape[-2:], y0)
    ones = torch.ones(b, dtype=y0.dtype, device=y0.device)
    return SampleResult(sr=sr, y0=y0, diffusion_mask=diffusion_mask, model_mask=model_mask, density=ones,
                        diffusion_density=ones.clone(), trajectory=trajectory, predictions=predictions)


def run_chain(step_fn: Callable[[Any, torch.Tensor], tuple[torch.Tensor, Any]], x_T: torch.Tensor,
              steps: Iterable[Any], progress: bool = False, return_trajectory: bool = False,
              desc: str = "sampling") -> ChainOutput:
    """Run a reverse chain: ``x = x_T``, then for every ``step`` in ``steps``: ``x, pred = step_fn(step, x)``.

    ``step_fn`` does all the arithmetic and draws all the randomness, so the chain is exactly the hand-written loop.
    ``progress`` shows a tqdm bar (when tqdm is installed; otherwise none).  With ``return_trajectory`` the output
    holds x_T and every later state (``trajectory``) and every step's prediction (``predictions``).
    """
    it = steps
    if progress:
        try:
            from tqdm.auto import tqdm

            it = tqdm(steps, desc=desc, total=len(steps) if hasattr(steps, "__len__") else None)
        except ImportError:  # pragma: no cover - tqdm is optional
            pass
    x = x_T
    trajectory = [x] if return_trajectory else None
    predictions: list[Any] | None = [] if return_trajectory else None
    for step in it:
        x, pred = step_fn(step, x)
        if return_trajectory:
            predictions.append(pred)
            trajectory.append(x)
    return ChainOutput(x=x, trajectory=trajectory, predictions=predictions)
