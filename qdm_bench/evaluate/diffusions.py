"""The diffusion process each model family trains and samples with, looked up by ``ModelInfo.diffusion``.

Every process offers the same two calls, so ``qdm-bench train`` and ``qdm-bench quality`` treat all models alike::

    diffusion.training_loss(model, x0, y0, lq, generator=g)["loss"]   # x0, y0: HR in [-1, 1]; lq: LR in [-1, 1]
    diffusion.sample(model, lq, sf, threshold=None, seed=0).sr          # SR in [-1, 1]

* ``resshift``: QDM's mask-guided residual shifting (:class:`qdm.diffusion.ResShiftDiffusion`), also used for the
  Figure-5 baselines (DiT, U-Net, Swin-U-Net).
* ``bi-diffsr``: BI-DiffSR's DDPM (T = 2000, ε-prediction) with a 50-step DDIM sampler.
* ``dualdomain``: the dual-domain project's residual-shifting chain (its own η schedule, residual prediction).
"""
from __future__ import annotations

import importlib
from typing import Any

from qdm_bench.errors import ConfigError

__all__ = ["DIFFUSIONS", "make_diffusion", "diffusion_for"]

DIFFUSIONS = {
    "resshift": "qdm.diffusion:ResShiftDiffusion",
    "bi-diffsr": "baselines.bi_diffsr_ddpm:BIDiffSRDiffusion",
    "dualdomain": "baselines.dualdomain:DualDomainDiffusion",
}


def make_diffusion(name: str, **kwargs: Any):
    """A new diffusion process by name (a key of :data:`DIFFUSIONS`) or ``package.module:Class``."""
    target = DIFFUSIONS.get(name, name)
    if ":" not in target:
        raise ConfigError(f"unknown diffusion {name!r}; use one of {', '.join(DIFFUSIONS)} or package.module:Class")
    mod, _, cls = target.partition(":")
    return getattr(importlib.import_module(mod), cls)(**kwargs)


def diffusion_for(info: Any, kappa: float | None = None, posterior: str | None = None):
    """The process a model (its ModelInfo) trains and samples with; ``kappa`` sets the ResShift noise scale κ and
    ``posterior`` its reverse step on inactive sites ("paper": Eq. 4, the default; "reference": the authors' code)."""
    if info.diffusion == "none":
        raise ConfigError(f"{info.name} is a {info.family} model, not a denoiser: train, quality and pgs take "
                          "denoisers (its cost is measured by params, macs, memory and speed, and `qdm-bench sr` runs "
                          "it in the authors' pipeline)")
    if info.diffusion == "resshift":
        from qdm.diffusion import ResShiftDiffusion, eta_schedule

        return ResShiftDiffusion(eta_schedule(kappa=2.0 if kappa is None else kappa), posterior=posterior or "paper")
    if posterior is not None:
        raise ConfigError(f"the posterior mode applies to mask-guided ResShift models; {info.name} uses its own "
                         f"{info.diffusion!r} process")
    if kappa is not None:
        raise ConfigError(f"kappa applies to ResShift-family models; {info.name} uses its own {info.diffusion!r} "
                         "process (leave --kappa unset)")
    return make_diffusion(info.diffusion)
