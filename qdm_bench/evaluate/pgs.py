"""The harness side of patch-adaptive group sampling: a registered model's PGS family and the peak-memory hook.

:mod:`baselines.pgs` stands alone: it needs a family (or a process object) and takes an optional ``measure`` hook.
This module supplies both for the harness: :func:`family_for` looks the model's process up in
:mod:`qdm_bench.evaluate.diffusions` and maps it with :func:`baselines.pgs.families.family_of`, and
:func:`peak_memory_hook` measures a run with :func:`qdm_bench.measure.memory.peak_memory_cpu` / ``_cuda``.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from baselines.pgs.families import family_of

__all__ = ["family_for", "peak_memory_hook"]


def family_for(model: Any = None, info: Any = None, diffusion: Any = None, kappa: float | None = None):
    """The PGS family of a backbone, from ``diffusion`` if given, else from ``info.diffusion`` (``info`` defaults
    to ``model.qdm_bench_info``) through :func:`qdm_bench.evaluate.diffusions.diffusion_for` (``kappa``: a
    checkpoint's κ); without either a default ResShift process (κ = ``kappa`` or 2).

    resshift → ResShiftFamily; dualdomain → ResShiftFamily with residual prediction (its own η, κ); bi-diffsr or
    any process with ``betas`` → DDIMFamily (uniform steps: the registry's ``num_steps``).
    """
    info = info or getattr(model, "qdm_bench_info", None)
    if diffusion is None:
        if info is not None:
            from qdm_bench.evaluate.diffusions import diffusion_for

            diffusion = diffusion_for(info, kappa)
        else:
            from qdm.diffusion import ResShiftDiffusion, eta_schedule

            diffusion = ResShiftDiffusion(eta_schedule(kappa=2.0 if kappa is None else kappa))
    return family_of(diffusion, getattr(info, "num_steps", None))


def peak_memory_hook(device: torch.device | str) -> Callable[[Callable[[], Any]], tuple[Any, int, str]]:
    """A ``measure`` hook for :class:`baselines.pgs.PatchGroupSampler` and :func:`baselines.pgs.uniform_sample`:
    it runs the work once (no warm-up) under ``peak_memory_cuda`` on a CUDA ``device``, else ``peak_memory_cpu``,
    and returns (output, peak bytes above the pre-run baseline, method).  The sampler times the call and
    synchronises CUDA around it."""
    dev = torch.device(device)

    def measure(work: Callable[[], Any]) -> tuple[Any, int, str]:
        from qdm_bench.measure.memory import peak_memory_cpu, peak_memory_cuda

        box: list[Any] = []

        def run() -> None:
            box.append(work())

        mem = peak_memory_cuda(run, dev, warmup=0) if dev.type == "cuda" else peak_memory_cpu(run, warmup=0)
        return box[0], int(mem.peak_bytes), mem.method

    return measure
