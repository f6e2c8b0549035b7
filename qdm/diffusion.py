"""Mask-guided residual-shifting diffusion (QDM paper §3.2, Eq. 1–7) and the pixel-space sampler.

Notation: x0 is the HR image (or latent), y0 the bicubic-upsampled LR image, e0 = y0 - x0 the residual,
M the diffusion mask (1 = active, detail-rich site), η_t the ResShift shifting schedule, α_t = η_t - η_{t-1}
and κ the noise scale. Step indices i = 0 … T-1 correspond to the paper's t = 1 … T.

The paper's equations, in words:

* **Eq. 1** (transition): x_t given x_{t-1} is Gaussian with mean x_{t-1} + α_t·e0 on active sites (x0 + η_t·e0 on
  inactive sites) and variance κ²·α_t·M.
* **Eq. 2** (marginal): x_t ~ N(x0 + η_t·e0, κ²·η_t·M): the mean shift toward y0 applies everywhere, the noise only on
  active sites (:meth:`ResShiftDiffusion.q_sample`).
* **Eq. 3** (prior): x_T ~ N(y0, κ²·M) (:meth:`ResShiftDiffusion.prior_sample`).
* **Eq. 4** (reverse step): mean M·[(η_{t-1}/η_t)·x_t + (α_t/η_t)·f_θ] + (1-M)·f_θ, variance κ²·(η_{t-1}/η_t)·α_t·M,
  so inactive sites take the prediction f_θ deterministically (:meth:`ResShiftDiffusion.p_step`).
* **Shortcuts** (not in the paper; patch-adaptive group sampling): :meth:`ResShiftDiffusion.shortcut_start` enters the
  chain at any step, :meth:`ResShiftDiffusion.reverse_step` jumps t → s < t (plain ResShift, no mask).
* **Eq. 5–7** (losses): ‖f_θ - x0‖² for the downstream (L_down) and upstream (L_up) predictions, weighted λ1, λ2,
  plus λ3·LPIPS(f_θ, x0) in the fine-tune (:meth:`ResShiftDiffusion.training_loss`).

Where the paper and the reference implementation (linYDTHU/QDM) differ, and what this module does:

* **Reverse posterior.** ``posterior="paper"`` (default) is Eq. 4. ``posterior="reference"`` applies the ResShift
  posterior mean everywhere (so inactive sites follow x̂0 + η_{t-1}(y0 - x̂0), consistent with the forward marginal) and
  puts a 1e-7 noise std on inactive sites. Both agree on active sites and with a full mask reduce to plain ResShift.
* **1e-7 floors.** The reference adds 1e-7·(1-M) to the noise std of ``q_sample``, ``prior_sample`` and ``p_step``
  (t > 0) and to the variance of ``q_mean_variance``. Only ``posterior="reference"`` does so; the paper mode has exactly
  zero noise on inactive sites.
* **Prior std.** The paper's Eq. 3 uses κ²·M; the reference uses κ²·η_T·M (η_T = 0.9801, a 1 % std difference).
  We use κ²·η_T·M in both modes, which is Eq. 2 at t = T.
* **λ3.** The paper says λ1 = λ2 = λ3 = 1; the reference LPIPS fine-tune uses λ3 = 0.1. Here the perceptual term is an
  optional hook with ``perceptual_weight`` (default 0, i.e. off); pass 0.1 to match the reference, 1.0 for the paper.
* **Loss reduction.** As in the reference the MSE is taken over all pixels, not only the masked ones.
"""
from __future__ import annotations

import inspect
import math
import operator
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from qdm.sampling import (  # SampleResult, check_sr_input, resolve_generator: re-exported (they used to live here)
    SampleResult, bicubic_y0, check_sr_input, ones_masks, resolve_generator, run_chain,
)

__all__ = ["EtaSchedule", "eta_schedule", "ResShiftDiffusion", "SampleResult", "POSTERIOR_MODES", "check_sr_input",
           "resolve_generator"]

POSTERIOR_MODES = ("paper", "reference")
_FLOOR = 1e-7  # the reference's noise-std floor on inactive sites


# ----------------------------------------------------------------------------------------------------- schedule
@dataclass
class EtaSchedule:
    """ResShift η schedule and the derived per-step coefficients (float64, shape (steps,))."""

    sqrt_etas: torch.Tensor
    etas: torch.Tensor
    etas_prev: torch.Tensor
    alphas: torch.Tensor
    posterior_variance: torch.Tensor  # κ²·η_prev/η·α, entry 0 (which is 0) replaced by entry 1
    coef1: torch.Tensor  # η_prev / η
    coef2: torch.Tensor  # α / η
    input_std: torch.Tensor  # sqrt(κ²·η + 1)
    kappa: float
    steps: int

    def __len__(self) -> int:
        return self.steps


def eta_schedule(steps: int = 15, min_noise_level: float = 0.04, etas_end: float = 0.99, kappa: float = 2.0,
                 power: float = 0.3) -> EtaSchedule:
    """The 'exponential' ResShift schedule (docs/qdm.md §3.2): √η_i = s0·(etas_end/s0)^((i/(T-1))^power), s0 = min(m/κ, m)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"eta_schedule: steps must be an integer >= 2, got {steps!r}")
    for name, value in (("min_noise_level", min_noise_level), ("kappa", kappa), ("power", power)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"eta_schedule: {name} must be a finite number > 0, got {value!r}")
    start = min(min_noise_level / kappa, min_noise_level)  # √η at step index 0
    if not (isinstance(etas_end, (int, float)) and start < etas_end <= 1.0):
        raise ValueError(f"eta_schedule: etas_end (√η_T) must satisfy √η_0 = {start:g} < etas_end <= 1, "
                         f"got {etas_end!r}")
    i = torch.arange(steps, dtype=torch.float64)
    sqrt_etas = start * (etas_end / start) ** ((i / (steps - 1)) ** power)
    etas = sqrt_etas ** 2
    etas_prev = torch.cat([etas.new_zeros(1), etas[:-1]])
    alphas = etas - etas_prev
    posterior_variance = kappa ** 2 * etas_prev / etas * alphas
    posterior_variance = torch.cat([posterior_variance[1:2], posterior_variance[1:]])
    return EtaSchedule(
        sqrt_etas=sqrt_etas, etas=etas, etas_prev=etas_prev, alphas=alphas, posterior_variance=posterior_variance,
        coef1=etas_prev / etas, coef2=alphas / etas, input_std=torch.sqrt(kappa ** 2 * etas + 1.0),
        kappa=float(kappa), steps=steps,
    )


# ----------------------------------------------------------------------------------------------------- helpers
def _upstream_capable(fn: Callable) -> bool:
    """True if ``fn`` explicitly accepts ``return_upstream`` (wrappers exposing _orig_mod/module are unwrapped)."""
    seen = 0
    while fn is not None and seen < 4:
        try:
            target = fn.forward if isinstance(fn, torch.nn.Module) else fn  # Module.__call__ is (*args, **kwargs)
            params = inspect.signature(target).parameters
        except (TypeError, ValueError):
            return False
        if "return_upstream" in params:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return False
        fn = getattr(fn, "_orig_mod", None) or getattr(fn, "module", None)  # torch.compile / DDP wrappers
        seen += 1
    return False


def _as_float_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    return mask.to(device=like.device, dtype=like.dtype)


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _per_sample_mean(x: torch.Tensor) -> torch.Tensor:
    return x.float().flatten(1).mean(dim=1)


# ----------------------------------------------------------------------------------------------------- diffusion
class ResShiftDiffusion:
    """Mask-guided ResShift diffusion; ``posterior`` selects Eq. 4 ("paper") or the reference's posterior."""

    def __init__(self, schedule: EtaSchedule | None = None, posterior: str = "paper", normalize_input: bool = True):
        if posterior not in POSTERIOR_MODES:
            raise ValueError(f"unknown posterior mode {posterior!r}; expected one of {POSTERIOR_MODES}")
        if schedule is not None and not isinstance(schedule, EtaSchedule):
            raise ValueError(f"schedule must be an EtaSchedule (see eta_schedule()), got {type(schedule).__name__}")
        self.schedule = schedule if schedule is not None else eta_schedule()
        self.posterior = posterior
        self.normalize_input = bool(normalize_input)
        self._upstream_cache: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()

    @property
    def num_steps(self) -> int:
        """Number of diffusion steps T."""
        return self.schedule.steps

    @property
    def kappa(self) -> float:
        """Noise scale κ."""
        return self.schedule.kappa

    def __repr__(self) -> str:
        return (f"ResShiftDiffusion(steps={self.num_steps}, kappa={self.kappa}, posterior={self.posterior!r}, "
                f"normalize_input={self.normalize_input})")

    # -- coefficient gathering
    def _t(self, t: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
        """Validate t and return it as a (B,) long tensor on CPU."""
        if isinstance(t, int):
            t = torch.full((x.shape[0],), t, dtype=torch.long)
        if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"t must be an integer tensor of step indices, got {t!r}")
        t = t.reshape(-1).to(device="cpu", dtype=torch.long)
        if t.numel() != x.shape[0]:
            raise ValueError(f"t has {t.numel()} entries but the batch has {x.shape[0]} samples")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise ValueError(f"step indices must lie in [0, {self.num_steps - 1}], got {t.tolist()}")
        return t

    def _gather(self, arr: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """arr[t] as a (B, 1, …, 1) tensor in x's dtype and device."""
        vals = arr[t].to(device=x.device, dtype=x.dtype)
        return vals.reshape(-1, *([1] * (x.dim() - 1)))

    # -- forward process
    def q_mean_variance(self, x0: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None):
        """Eq. 2: mean x0 + η_t(y0 - x0), variance κ²η_t·M (+ 1e-7·(1-M) in reference mode)."""
        t = self._t(t, x0)
        eta = self._gather(self.schedule.etas, t, x0)
        mean = x0 + eta * (y0 - x0)
        var = (self.kappa ** 2) * eta * torch.ones_like(mean)
        m = _as_float_mask(mask, x0)
        if m is not None:
            var = var * m
            if self.posterior == "reference":
                var = var + _FLOOR * (1 - m)
        return mean, var

    def q_sample(self, x0: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                 noise: torch.Tensor | None = None, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x0, y0, M): x0 + η_t(y0 - x0) + κ√η_t·M·ε (reference: + 1e-7·(1-M)·ε)."""
        t = self._t(t, x0)
        if noise is None:
            noise = _randn(x0, generator)
        eta = self._gather(self.schedule.etas, t, x0)
        std = self.kappa * self._gather(self.schedule.sqrt_etas, t, x0)
        return x0 + eta * (y0 - x0) + self._gated_std(std, mask, x0) * noise

    def _gated_std(self, std: torch.Tensor, mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """std·M, plus the 1e-7·(1-M) floor in reference mode."""
        m = _as_float_mask(mask, like)
        if m is None:
            return std
        out = std * m
        if self.posterior == "reference":
            out = out + _FLOOR * (1 - m)
        return out

    def prior_sample(self, y0: torch.Tensor, mask: torch.Tensor | None = None, noise: torch.Tensor | None = None, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T = y0 + κ√η_T·M·ε (both modes; Eq. 2 at t = T, docs/qdm.md §3.6); reference mode adds the 1e-7·(1-M) floor."""
        if noise is None:
            noise = _randn(y0, generator)
        std = self.kappa * float(self.schedule.sqrt_etas[-1])
        return y0 + self._gated_std(torch.tensor(std, dtype=y0.dtype, device=y0.device), mask, y0) * noise

    def scale_input(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Network input x_t / √(κ²η_t + 1) when ``normalize_input`` (docs/qdm.md §3.4), else x_t unchanged."""
        if not self.normalize_input:
            return x_t
        return x_t / self._gather(self.schedule.input_std, self._t(t, x_t), x_t)

    # -- reverse process
    def p_step(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
               noise: torch.Tensor | None = None, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """One reverse step x_t → x_{t-1} (docs/qdm.md §3.5) from the prediction x0_hat.

        Active sites: posterior mean coef1_t·x_t + coef2_t·x0_hat plus √(clipped posterior variance_t)·ε for t > 0.
        Inactive sites: x0_hat exactly ("paper", Eq. 4), or the posterior mean with noise std 1e-7 for t > 0
        ("reference").
        """
        t = self._t(t, x_t)
        if noise is None:
            noise = _randn(x_t, generator)
        mean = self._gather(self.schedule.coef1, t, x_t) * x_t + self._gather(self.schedule.coef2, t, x_t) * x0_hat
        nonzero = (t > 0).to(device=x_t.device, dtype=x_t.dtype).reshape(-1, *([1] * (x_t.dim() - 1)))
        std = torch.sqrt(self._gather(self.schedule.posterior_variance, t, x_t)) * nonzero
        m = _as_float_mask(mask, x_t)
        if self.posterior == "reference":  # posterior mean everywhere, 1e-7 std floor on inactive sites for t > 0
            return mean + self._gated_std(std, m, x_t) * nonzero * noise
        sample = mean + std * noise
        if m is None:
            return sample
        return m * sample + (1 - m) * x0_hat

    def _index(self, t: int, name: str = "t") -> int:
        """One step index as a Python int in [0, T)."""
        try:
            if isinstance(t, bool):
                raise TypeError
            t = operator.index(t)
        except TypeError:
            raise ValueError(f"{name} must be one integer step index, got {t!r}") from None
        if not 0 <= t < self.num_steps:
            raise ValueError(f"step index {name} = {t} is outside [0, {self.num_steps - 1}]")
        return t

    def shortcut_start(self, x0: torch.Tensor, y0: torch.Tensor, t: int, noise: torch.Tensor | None = None, *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t = x0 + η_t(y0 - x0) + κ√η_t·ε at one step index t for the whole batch (no mask): Eq. 2, the start of
        a chain entered late (x0 = y0: ResShift started at t).

        The same draw as :meth:`q_sample` with a full mask, but κ√η_t is formed in float64 and rounded once (q_sample
        rounds √η_t first), so the two agree bit for bit only when κ is a power of two.
        """
        t = self._index(t)
        eta = float(self.schedule.etas[t])
        std = torch.tensor(self.kappa * float(self.schedule.sqrt_etas[t]), dtype=y0.dtype, device=y0.device)
        if noise is None:
            noise = _randn(y0, generator)
        return x0 + eta * (y0 - x0) + std * noise

    def reverse_step(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: int, s: int | None,
                     noise: torch.Tensor | None = None, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t → x_s for any step indices t > s (no mask), or x0_hat when ``s`` is None (the end of the chain).

        The generalised ResShift posterior: mean (η_s/η_t)·x_t + (1 - η_s/η_t)·x0_hat, variance
        κ²·(η_s/η_t)·(η_t - η_s), its coefficients formed in float64 and then cast.  With s = t - 1 this is exactly
        :meth:`p_step` with a full mask.  ε is drawn from ``generator`` unless ``noise`` is given.
        """
        if s is None:
            return x0_hat
        t, s = self._index(t), self._index(s, "s")
        if s >= t:
            raise ValueError(f"a reverse step goes from t to s < t, got t = {t}, s = {s}")
        eta_t, eta_s = self.schedule.etas[t], self.schedule.etas[s]
        c1 = (eta_s / eta_t).to(x_t.dtype)
        c2 = ((eta_t - eta_s) / eta_t).to(x_t.dtype)
        var = (self.kappa ** 2 * eta_s / eta_t * (eta_t - eta_s)).to(x_t.dtype)
        if noise is None:
            noise = _randn(x_t, generator)
        return c1.to(x_t.device) * x_t + c2.to(x_t.device) * x0_hat + torch.sqrt(var).to(x_t.device) * noise

    # -- training
    def _accepts_upstream(self, model: Callable) -> bool:
        """Whether ``model`` takes ``return_upstream`` (inspected once per model object, then cached)."""
        try:
            return self._upstream_cache[model]
        except (KeyError, TypeError):
            pass
        value = _upstream_capable(model)
        try:
            self._upstream_cache[model] = value
        except TypeError:  # not weak-referenceable: just don't cache
            pass
        return value

    def training_loss(self, model: Callable, x0: torch.Tensor, y0: torch.Tensor, lq: torch.Tensor,
                      mask: torch.Tensor | None = None, t: torch.Tensor | None = None,
                      noise: torch.Tensor | None = None, lambdas: Sequence[float] = (1.0, 1.0),
                      perceptual: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                      perceptual_weight: float = 0.0, model_mask: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Eq. 6/7: λ1·MSE(pred, x0) + λ2·MSE(upstream, x0) + perceptual_weight·perceptual(pred, x0).

        t ~ Uniform{0 … T-1} per sample and noise ~ N(0, I) unless given (drawn from ``generator``); the noisy input is
        q_sample(x0, y0, t, mask). A model with a ``return_upstream`` parameter is called as
        ``model(scale_input(x_t, t), t, lq, mask=model_mask, return_upstream=True)`` and returns (pred, upstream);
        any other model is called as ``model(x, t, lq, mask=model_mask)``, and then mse_up = 0 and λ2 is ignored.
        The MSEs are means over all pixels (unmasked, as in the reference). ``perceptual`` (e.g. an LPIPS wrapper) is
        called whenever given and its NaNs are set to 0 as in the reference; weight 0.1 matches the reference
        fine-tune, 1.0 the paper. Returns {"loss", "mse_down", "mse_up"} (+ "perceptual"), all scalars.
        """
        if len(lambdas) != 2:
            raise ValueError(f"lambdas must be a pair (lambda_down, lambda_up), got {lambdas!r}")
        if perceptual is None and perceptual_weight != 0:
            raise ValueError("perceptual_weight is non-zero but no perceptual callable was given")
        b = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.num_steps, (b,), generator=generator, device=x0.device)
        else:
            t = self._t(t, x0).to(x0.device)
        if noise is None:
            noise = _randn(x0, generator)
        x_t = self.q_sample(x0, y0, t, mask, noise)
        x_in = self.scale_input(x_t, t)
        if self._accepts_upstream(model):
            out = model(x_in, t, lq, mask=model_mask, return_upstream=True)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise ValueError("a model called with return_upstream=True must return (prediction, upstream)")
            pred, up = out
            mse_up = torch.mean((x0 - up) ** 2)
        else:
            pred = model(x_in, t, lq, mask=model_mask)
            mse_up = torch.zeros((), dtype=pred.dtype, device=pred.device)
        mse_down = torch.mean((x0 - pred) ** 2)
        lam_down, lam_up = (float(v) for v in lambdas)
        loss = lam_down * mse_down + lam_up * mse_up
        result = {"loss": loss, "mse_down": mse_down, "mse_up": mse_up}
        if perceptual is not None:
            p = torch.nan_to_num(torch.as_tensor(perceptual(pred, x0)), nan=0.0).mean()
            result["perceptual"] = p
            result["loss"] = loss + perceptual_weight * p
        return result

    # -- sampling
    def sample(self, model: Callable, lq: torch.Tensor, sf: int = 4, threshold: float | None = None,
               mode: str = "paper", seed: int | None = None, generator: torch.Generator | None = None,
               clamp: bool = True, progress: bool = False, return_trajectory: bool = False,
               masks: tuple[torch.Tensor, torch.Tensor] | None = None, deterministic: bool = False,
               y0: torch.Tensor | None = None) -> SampleResult:
        """Pixel-space super-resolution of ``lq`` (B, C, h, w) in [-1, 1] by ``sf`` (docs/qdm.md §3.10, no autoencoder).

        ``y0`` given (the latent of the upsampled LR image, :mod:`qdm.latent`) replaces bicubic(lq, ×sf): the chain
        then runs at y0's size, with masks from lq at that size, and ``sf`` is not used.

        y0 = bicubic(lq, ×sf). Masks come from ``qdm.quadtree.pipeline_masks(lq, (H, W), threshold, mode=mode,
        down_patch=model.down_patch or 2)``; ``mode`` is the *threshold* mode ("paper" strict ``>``,
        "reference" ``>=``), independent of the posterior mode. ``threshold=None`` means a full mask (all ones), and
        the model is then called with ``mask=None`` (its dense forward; same output, less work).
        ``masks=(diffusion_mask, model_mask)`` overrides both.  ``deterministic=True`` is a variant (not the paper's
        sampler): x_T = y0 and every reverse step takes its posterior mean (no noise), as the dual-domain project's
        deterministic mode; the network runs the same T steps.
        Then x_T = prior_sample(y0, M) and for i = T-1 … 0: x̂0 = model(scale_input(x_t, i), i, lq, mask=model_mask),
        x_{t-1} = p_step(x_t, x̂0, i, M). Randomness comes only from ``generator`` (or a new one seeded with ``seed``
        on lq's device), so seeded runs are reproducible. The caller is responsible for ``torch.no_grad()`` and
        ``model.eval()``.
        """
        generator = resolve_generator(seed, generator, lq.device)
        b, _, h, w = lq.shape
        if y0 is None:
            check_sr_input(lq, sf)
            y0 = bicubic_y0(lq, sf)
        size = tuple(y0.shape[-2:])
        down_patch = int(getattr(model, "down_patch", 2))

        model_mask_arg: torch.Tensor | None
        if masks is not None:
            diffusion_mask, model_mask = masks
            diffusion_mask = diffusion_mask.to(device=lq.device, dtype=lq.dtype)
            if diffusion_mask.dim() == 3:
                diffusion_mask = diffusion_mask.unsqueeze(1)
            model_mask_arg = model_mask
        elif threshold is None:
            diffusion_mask, model_mask = ones_masks(b, size, lq, down_patch)
            model_mask_arg = None
        else:
            from qdm.quadtree import pipeline_masks  # lazy: keeps this module importable on its own

            diffusion_mask, model_mask = pipeline_masks(lq, size, threshold, mode=mode, down_patch=down_patch)
            diffusion_mask = diffusion_mask.to(device=lq.device, dtype=lq.dtype)
            model_mask_arg = model_mask

        window_density = None
        if hasattr(model, "window"):
            from qdm.quadtree import window_density as _window_density

            window_density = _window_density(model_mask, model.window)

        def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            t = torch.full((b,), i, dtype=torch.long, device=lq.device)
            x0_hat = model(self.scale_input(x, t), t, lq, mask=model_mask_arg)
            if isinstance(x0_hat, (tuple, list)):
                x0_hat = x0_hat[0]
            return self.p_step(x, x0_hat, t, diffusion_mask, generator=generator,
                               noise=torch.zeros_like(x) if deterministic else None), x0_hat

        x_T = y0.clone() if deterministic else self.prior_sample(y0, diffusion_mask, generator=generator)
        chain = run_chain(step, x_T, range(self.num_steps - 1, -1, -1), progress, return_trajectory)
        sr = chain.x.clamp(-1, 1) if clamp else chain.x
        return SampleResult(
            sr=sr, y0=y0, diffusion_mask=diffusion_mask, model_mask=model_mask,
            density=_per_sample_mean(model_mask), diffusion_density=_per_sample_mean(diffusion_mask),
            window_density=window_density, trajectory=chain.trajectory, predictions=chain.predictions,
        )
