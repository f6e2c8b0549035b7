"""BI-DiffSR's diffusion (docs/seed-systems.md §4.2): DDPM training, DDIM sampling and the DDIM steps patch samplers call.

Spec: docs/seed-systems.md §4.2.  Written from the spec; no upstream code is used.

* :class:`BIDiffSRDiffusion` — T = 2000, linear β from 1e-6 to 1e-2, ε-prediction; L1 training with one timestep per
  minibatch; DDIM (η = 0, "leading" spacing, clipped x̂₀) sampling with 50 steps (:meth:`BIDiffSRDiffusion.sample`).
* :func:`ddim_shortcut` / :func:`ddim_jump` — the SDEdit start and the deterministic DDIM update between two arbitrary
  timesteps for any ᾱ schedule, with float64 coefficients; :meth:`BIDiffSRDiffusion.shortcut_start` and
  :meth:`BIDiffSRDiffusion.reverse_step` are them on this process's schedule.  (:meth:`BIDiffSRDiffusion.ddim_step`,
  the sampler's own step, casts ᾱ to the data dtype before the square roots, so its numbers differ in the last bits.)
"""
from __future__ import annotations

import contextlib
import operator
from collections.abc import Sequence

import torch
from torch import nn

from baselines.bi_diffsr import T_MAX, frozen_binary_weights
from qdm.sampling import SampleResult, bicubic_y0, check_sr_input, mask_free_result, resolve_generator, run_chain

__all__ = ["BIDiffSRDiffusion", "ddim_timesteps", "ddim_coefficients", "ddim_shortcut", "ddim_jump"]


def ddim_timesteps(steps: int, total_step: int = T_MAX) -> list[int]:
    """diffusers' "leading" DDIM spacing (steps_offset 0): (steps−1)·r, …, r, 0 with r = total_step // steps."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= total_step:
        raise ValueError(f"steps must be an integer in [1, {total_step}], got {steps!r}")
    ratio = total_step // steps
    return [i * ratio for i in reversed(range(steps))]


def _randn(shape: Sequence[int], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """N(0, I) drawn on the generator's device (so a CPU generator works for CUDA data), then moved to ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=like.dtype).to(like.device)


def ddim_coefficients(alphas_cumprod: torch.Tensor, t: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(√ᾱ_t, √(1 − ᾱ_t)) of one timestep t of a (float64) ᾱ table: square roots in float64, then cast to like."""
    a = alphas_cumprod[t]
    return a.sqrt().to(like), (1 - a).sqrt().to(like)


def ddim_shortcut(alphas_cumprod: torch.Tensor, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
    """SDEdit start x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε at one timestep t (:func:`ddim_coefficients`)."""
    sa, sb = ddim_coefficients(alphas_cumprod, t, x0)
    return sa * x0 + sb * noise


def ddim_jump(alphas_cumprod: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, t: int, s: int | None,
              clip_range: tuple[float, float] | None = None) -> torch.Tensor:
    """Deterministic DDIM (η = 0) update t → s for any s < t: x̂₀ = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t (clamped to
    ``clip_range`` unless None), x_s = √ᾱ_s·x̂₀ + √(1−ᾱ_s)·ε; ``s`` None returns x̂₀ (the end of a chain)."""
    sa, sb = ddim_coefficients(alphas_cumprod, t, x)
    x0 = (x - sb * eps) / sa
    if clip_range is not None:
        x0 = x0.clamp(*clip_range)
    if s is None:
        return x0
    sa_s, sb_s = ddim_coefficients(alphas_cumprod, s, x)
    return sa_s * x0 + sb_s * eps


class BIDiffSRDiffusion:
    """BI-DiffSR's diffusion (docs/seed-systems.md §4.2): DDPM training (T = 2000, linear β 1e-6 … 1e-2, ε-prediction, L1, one
    timestep per minibatch) and DDIM sampling (η = 0, "leading" spacing, x̂₀ clipped, final ᾱ = 1), as configured
    upstream through diffusers' DDPMScheduler / DDIMScheduler defaults.

    Data convention: qdm-bench passes images in [-1, 1]; the network's native range is [0, 1], so x₀ ↦ (x₀ + 1)/2 for
    training and the sample is mapped back with 2x − 1.  ``clip_range`` is the x̂₀ clamp of the DDIM step in the
    native space: diffusers' default ``clip_sample_range = 1.0`` gives (-1, 1), which is what the upstream ran
    (it builds ``DDIMScheduler`` with default options); ``(0, 1)`` clamps to the data range instead.  The schedule is
    computed in float64 (diffusers: float32).
    """

    data_range = (0.0, 1.0)  # the network's native image range

    def __init__(self, total_step: int = T_MAX, beta_start: float = 1e-6, beta_end: float = 1e-2, steps: int = 50,
                 clip_range: tuple[float, float] | None = (-1.0, 1.0)):
        ddim_timesteps(steps, total_step)  # validates
        self.total_step, self.steps, self.clip_range = int(total_step), int(steps), clip_range
        self.betas = torch.linspace(beta_start, beta_end, total_step, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)

    @property
    def num_steps(self) -> int:
        """Network evaluations of one super-resolution (DDIM steps)."""
        return self.steps

    def __repr__(self) -> str:
        return f"BIDiffSRDiffusion(total_step={self.total_step}, steps={self.steps}, clip_range={self.clip_range})"

    def _abar(self, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """ᾱ_t as a (B, 1, 1, 1) tensor in ``like``'s dtype and device; t < 0 gives ᾱ = 1 (diffusers' final step)."""
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1).cpu()
        ab = torch.where(t >= 0, self.alphas_cumprod[t.clamp_min(0)], torch.ones((), dtype=torch.float64))
        return ab.to(device=like.device, dtype=like.dtype).reshape(-1, 1, 1, 1)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """√ᾱ_t·x₀ + √(1 − ᾱ_t)·ε (x₀ in the native [0, 1] range)."""
        ab = self._abar(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def training_loss(self, model, x0: torch.Tensor, y0: torch.Tensor, lq: torch.Tensor,
                      mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      t: torch.Tensor | int | None = None, noise: torch.Tensor | None = None,
                      **ignored) -> dict[str, torch.Tensor]:
        """L1 between ε and model(x_t, t, lq) with ONE timestep t ~ U{0 … T−1} for the whole minibatch.

        x0 (HR) and lq (LR condition) are in [-1, 1]; y0 and mask are unused (the model builds its own condition).
        t and ε are drawn from ``generator`` unless given.  Returns {"loss", "l1", "t"}.
        """
        b = x0.shape[0]
        if t is None:
            device = generator.device if generator is not None else x0.device
            t = torch.randint(0, self.total_step, (1,), generator=generator, device=device)
        t = torch.as_tensor(t, dtype=torch.long).reshape(-1)
        if t.numel() != 1 or not 0 <= int(t) < self.total_step:
            raise ValueError(f"t must be one timestep in [0, {self.total_step}), got {t.tolist()}")
        t = t.to(x0.device).expand(b)
        x0n = (x0 + 1) / 2
        if noise is None:
            noise = _randn(x0.shape, x0, generator)
        eps = model(self.q_sample(x0n, t, noise), t, lq, mask=None)
        l1 = (eps - noise).abs().mean()
        return {"loss": l1, "l1": l1, "t": t[:1]}

    def ddim_step(self, x: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM (η = 0) step x_t → x_{t_prev}: x̂₀ = (x − √(1−ᾱ_t)ε)/√ᾱ_t, clipped; returns (x_prev, x̂₀)."""
        ab, ab_prev = self._abar(t, x), self._abar(t_prev, x)
        x0_hat = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
        if self.clip_range is not None:
            x0_hat = x0_hat.clamp(*self.clip_range)
        return ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps, x0_hat

    def _timestep(self, t: int, name: str = "t") -> int:
        """One DDPM timestep as a Python int in [0, total_step)."""
        try:
            if isinstance(t, bool):
                raise TypeError
            t = operator.index(t)
        except TypeError:
            raise ValueError(f"{name} must be one integer DDPM timestep, got {t!r}") from None
        if not 0 <= t < self.total_step:
            raise ValueError(f"timestep {name} = {t} is outside [0, {self.total_step})")
        return t

    def shortcut_start(self, x0: torch.Tensor, t: int, noise: torch.Tensor | None = None, *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """SDEdit start √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε at one timestep t (x₀ in the native range; float64 coefficients, see
        :func:`ddim_shortcut`; :meth:`q_sample` casts ᾱ first).  ε is drawn from ``generator`` unless given."""
        t = self._timestep(t)
        if noise is None:
            noise = _randn(x0.shape, x0, generator)
        return ddim_shortcut(self.alphas_cumprod, x0, t, noise)

    def reverse_step(self, x: torch.Tensor, eps: torch.Tensor, t: int, s: int | None) -> torch.Tensor:
        """DDIM (η = 0) update between any timesteps t > s with this process's x̂₀ clamp (:func:`ddim_jump`, float64
        coefficients); ``s`` None returns the clamped x̂₀."""
        t, s = self._timestep(t), None if s is None else self._timestep(s, "s")
        if s is not None and s >= t:
            raise ValueError(f"a reverse step goes from t to s < t, got t = {t}, s = {s}")
        return ddim_jump(self.alphas_cumprod, x, eps, t, s, self.clip_range)

    def sample(self, model, lq: torch.Tensor, sf: int = 4, threshold: float | None = None, seed: int | None = None,
               generator: torch.Generator | None = None, steps: int | None = None, progress: bool = False,
               clamp: bool = True, return_trajectory: bool = False, **ignored) -> SampleResult:
        """DDIM super-resolution of ``lq`` (B, C, h, w) in [-1, 1] by ``sf``; ``.sr`` is in [-1, 1].

        x_T ~ N(0, I) at HR size from ``generator`` (or a new one seeded with ``seed`` on lq's device), then for t in
        the leading spacing (1960, 1920, …, 0 for 50 steps): ε = model(x_t, t, y0, mask=None) with y0 = bicubic(lq)
        (the model maps it to [0, 1]), one DDIM step.  ``threshold`` is accepted for interface compatibility and
        ignored (no mask); the mask fields of the result are all ones, densities 1.  ``trajectory`` (if asked) holds
        the native [0, 1]-space states x_T … x_0, ``predictions`` the clipped x̂₀ mapped to [-1, 1].  The binarised
        weights are computed once for the whole run (:func:`frozen_binary_weights`).  The caller is responsible for
        ``torch.no_grad()`` and ``model.eval()``.
        """
        check_sr_input(lq, sf)
        generator = resolve_generator(seed, generator, lq.device)
        ts = ddim_timesteps(self.steps if steps is None else steps, self.total_step)
        ratio = self.total_step // len(ts)
        b, c, h, w = lq.shape
        y0 = bicubic_y0(lq, sf)

        def step(t: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            eps = model(x, torch.full((b,), t, dtype=torch.long, device=lq.device), y0, mask=None)
            return self.ddim_step(x, eps.to(x.dtype), t, t - ratio)

        x_T = _randn((b, c, h * sf, w * sf), lq, generator)
        frozen = frozen_binary_weights(model) if isinstance(model, nn.Module) else contextlib.nullcontext()
        with frozen:
            chain = run_chain(step, x_T, ts, progress, return_trajectory)
        sr = 2 * chain.x - 1
        sr = sr.clamp(-1, 1) if clamp else sr
        predictions = None if chain.predictions is None else [2 * x0_hat - 1 for x0_hat in chain.predictions]
        return mask_free_result(sr, y0, chain.trajectory, predictions)
