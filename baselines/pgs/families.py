"""PGS diffusion families: shortcut start, model call and respaced steps, through the processes' own step functions."""
from __future__ import annotations

from typing import Any, Callable

import torch

from baselines.bi_diffsr_ddpm import ddim_coefficients, ddim_jump, ddim_shortcut
from baselines.pgs.util import ASSUMED, check_int
from qdm.diffusion import ResShiftDiffusion

__all__ = ["ResShiftFamily", "DDIMFamily", "family_of", "as_family", "is_family"]


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _first(out):
    """A model's prediction (the first element when it returns a tuple)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class ResShiftFamily:
    """ResShift-family steps (QDM, U-Net, DiT, Swin-U-Net, …): x̂0-predicting models on a residual-shifting chain.

    Shortcut (:meth:`qdm.diffusion.ResShiftDiffusion.shortcut_start`): x_τ = x̃0 + η_τ(y0 - x̃0) + κ√η_τ·ε (x̃0 = y0:
    ResShift started at τ).  Step t → s < t (:meth:`qdm.diffusion.ResShiftDiffusion.reverse_step`, the generalised
    posterior): mean (η_s/η_t)·x_t + (1 - η_s/η_t)·x̂0, variance κ²·(η_s/η_t)·(η_t - η_s); the last step returns x̂0.
    For adjacent steps this is exactly :meth:`qdm.diffusion.ResShiftDiffusion.p_step` (full mask).  ``residual``:
    the model predicts x0 - y0 (x̂0 = y0 + output); ``clip_x0`` clamps x̂0 to [-1, 1].  ``sampler`` (default the
    diffusion) provides ``.sample`` for the uniform baseline.
    """

    name = "resshift"

    def __init__(self, diffusion: ResShiftDiffusion | None = None, residual: bool = False, clip_x0: bool = False,
                 sampler: Any = None):
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
        return self.diffusion.shortcut_start(x0, y0, t, generator=generator)

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
        return self.diffusion.reverse_step(x, x0_hat, t, s, generator=generator)

    def describe(self) -> str:
        """One line for reports."""
        extra = (", residual x̂0 = y0 + output" if self.residual else "") + (", x̂0 clamped" if self.clip_x0 else "")
        return f"{self.name} (T={self.schedule_len}, κ={self.kappa:g}{extra})"


def _data_range(diffusion: Any) -> tuple[float, float]:
    """The model-space range of a DDPM process: its ``data_range`` attribute, else [-1, 1]."""
    return tuple(float(v) for v in getattr(diffusion, "data_range", (-1.0, 1.0)))


def _ddim_process(diffusion: Any) -> Any:
    """``diffusion`` when it brings its own DDIM steps (``shortcut_start`` and ``reverse_step``), else None."""
    ok = all(callable(getattr(diffusion, m, None)) for m in ("shortcut_start", "reverse_step"))
    return diffusion if ok else None


class DDIMFamily:
    """DDIM (η = 0) steps for ε-predicting DDPM backbones, e.g. BI-DiffSR (docs/seed-systems.md §4).

    ``betas`` (T,) defines ᾱ; ``data_range`` is the model's x0 range ([-1, 1] images are mapped to it);
    ``clip_range`` clamps x̂0 (diffusers' clip_sample; None: no clamp).  Shortcut (SDEdit, PatchScaler "Eq. 6"
    [inferred]): x_τ = √ᾱ_τ·x̃0 + √(1 - ᾱ_τ)·ε.  Step t → s: x̂0 = (x_t - √(1-ᾱ_t)·ε̂)/√ᾱ_t, x_s = √ᾱ_s·x̂0 +
    √(1-ᾱ_s)·ε̂; the last step returns x̂0.  The model is called as model(x_t, t, lq, mask=None) with the original
    integer t, one t per batch (BI-DiffSR's requirement).  ``sampler`` provides ``.sample`` for the uniform baseline.

    ``process``: a DDPM process with its own ``shortcut_start(x0, t, generator=)`` and ``reverse_step(x, eps, t, s)``
    on the same ᾱ (e.g. :class:`baselines.bi_diffsr_ddpm.BIDiffSRDiffusion`); the family then calls those.  Without
    one it uses the same float64-coefficient functions (:func:`baselines.bi_diffsr_ddpm.ddim_jump`) on ``betas``.
    """

    name = "ddim"

    def __init__(self, betas: torch.Tensor, uniform_steps: int = 50, data_range: tuple[float, float] = (-1.0, 1.0),
                 clip_range: tuple[float, float] | None = None, sampler: Any = None, process: Any = None):
        betas = torch.as_tensor(betas, dtype=torch.float64).reshape(-1)
        if betas.numel() < 2 or bool(((betas <= 0) | (betas >= 1)).any()):
            raise ValueError("betas must be a 1-D schedule of >= 2 values in (0, 1)")
        lo, hi = (float(v) for v in data_range)
        if not hi > lo:
            raise ValueError(f"data_range must be (low, high) with high > low, got {data_range}")
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self._uniform = check_int(uniform_steps, "uniform_steps")
        self.data_range = (lo, hi)
        self.clip_range = None if clip_range is None else tuple(float(v) for v in clip_range)
        self.sampler = sampler
        if process is not None:
            abar = getattr(process, "alphas_cumprod", None)
            if abar is None or not torch.equal(torch.as_tensor(abar, dtype=torch.float64), self.alphas_cumprod):
                raise ValueError("the DDIM family's process must have the same ᾱ schedule (alphas_cumprod) as betas")
        self.process = process
        self.assumptions = ("DDIM: SDEdit shortcut x = √ᾱ_τ·y0 + √(1-ᾱ_τ)·ε (PatchScaler Eq. 6 [inferred]), η = 0 "
                            "steps evenly respaced from t_start to 0 " + ASSUMED,)

    @classmethod
    def from_diffusion(cls, diffusion: Any, uniform_steps: int | None = None) -> "DDIMFamily":
        """Duck-typed: a process with ``betas`` and optionally ``num_steps``, ``data_range``, ``clip_range`` and its
        own DDIM steps (``shortcut_start`` / ``reverse_step``, then used as the family's ``process``)."""
        betas = getattr(diffusion, "betas", None)
        if betas is None:
            raise ValueError(f"{type(diffusion).__name__} has no betas; the DDIM family needs a DDPM beta schedule")
        steps = uniform_steps or getattr(diffusion, "num_steps", None) or 50
        return cls(betas, uniform_steps=int(steps), data_range=_data_range(diffusion),
                   clip_range=getattr(diffusion, "clip_range", None), sampler=diffusion,
                   process=_ddim_process(diffusion))

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

    def init(self, x0: torch.Tensor, y0: torch.Tensor, t: int, generator=None) -> torch.Tensor:
        """SDEdit start x_t = √ᾱ_t·x̃0 + √(1 - ᾱ_t)·ε (x̃0 in the model's range)."""
        if self.process is not None:
            return self.process.shortcut_start(x0, t, generator=generator)
        return ddim_shortcut(self.alphas_cumprod, x0, t, _randn(x0, generator))

    def start(self, y0: torch.Tensor, t: int) -> torch.Tensor:
        """The noise-free state at t from x̃0 = y0: √ᾱ_t·y0."""
        return ddim_coefficients(self.alphas_cumprod, t, y0)[0] * y0

    def call(self, model: Callable, x: torch.Tensor, t: torch.Tensor, lq: torch.Tensor,
             y0: torch.Tensor) -> torch.Tensor:
        """ε̂ = model(x_t, t, lq, mask=None)."""
        return _first(model(x, t, lq, mask=None))

    def step(self, x: torch.Tensor, eps: torch.Tensor, t: int, s: int | None, generator=None) -> torch.Tensor:
        """Deterministic DDIM update t → s; s None: x̂0."""
        if self.process is not None:
            return self.process.reverse_step(x, eps, t, s)
        return ddim_jump(self.alphas_cumprod, x, eps, t, s, self.clip_range)

    def describe(self) -> str:
        """One line for reports."""
        return f"ddim (T={self.schedule_len}, η=0, data range {self.data_range}, x̂0 clamp {self.clip_range})"


def is_family(obj: Any) -> bool:
    """Whether ``obj`` is a PGS family (a ResShiftFamily, a DDIMFamily or anything with their interface)."""
    if isinstance(obj, (ResShiftFamily, DDIMFamily)):
        return True
    return all(hasattr(obj, a) for a in ("schedule_len", "uniform_steps", "init", "call", "step", "to_model",
                                         "from_model"))


def family_of(process: Any, uniform_steps: int | None = None):
    """The family for a diffusion process object: a ResShiftDiffusion, the dual-domain chain (``sampler_process``),
    or any DDPM with ``betas`` (DDIM; ``uniform_steps`` defaults to its ``num_steps``).  A family is returned as is."""
    if is_family(process):
        return process
    if isinstance(process, ResShiftDiffusion):
        return ResShiftFamily(process)
    if hasattr(process, "sampler_process"):  # the dual-domain chain: residual x0 - y0, x̂0 clamped, own η and κ
        fam = ResShiftFamily(process.sampler_process(), residual=True, clip_x0=True, sampler=process)
        fam.name = "dualdomain"
        fam.assumptions = ("dual-domain: the exact ResShift posterior between respaced steps (the project's own "
                           "posterior is the uniform baseline's); its DCT and Fourier encoding are global to each "
                           "patch, so outputs depend on the patch size " + ASSUMED,)
        return fam
    if getattr(process, "betas", None) is not None:
        return DDIMFamily.from_diffusion(process, uniform_steps)
    raise ValueError(f"PGS has no adapter for {type(process).__name__}; pass a ResShiftDiffusion, an object with "
                     "DDPM betas (DDIM), or a ResShiftFamily / DDIMFamily")


def as_family(family: Any, what: str = "PGS"):
    """``family`` as a PGS family (a family, or a process object through :func:`family_of`); None is refused."""
    if family is None:
        raise ValueError(f"{what} needs a family: pass a ResShiftFamily / DDIMFamily or a diffusion process "
                         "(ResShiftDiffusion, BIDiffSRDiffusion, DualDomainDiffusion, …); the harness looks one up "
                         "for a registered model")
    return family_of(family)
