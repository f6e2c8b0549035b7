"""Training any registered denoiser with its family's diffusion objective (QDM: Eq. 6), in pixel space.

Data: random ``crop``×``crop`` patches of an image set (:mod:`qdm_bench.data.images`); the HR patch is x₀, its bicubic
×``scale`` LR version is the condition ``lq`` and, upsampled back to the patch size, y₀ (the diffusion's residual
target) — exactly as :meth:`qdm.diffusion.ResShiftDiffusion.sample` builds them; all in [-1, 1].  The last
``holdout`` images of the set are never used for training (quality is measured on them).  QDM is trained on its
dense path (all windows) with λ1 = λ2 = 1; the Figure-5 baselines get the same objective without the upstream term;
BI-DiffSR and the dual-domain model train with their own processes (:mod:`qdm_bench.evaluate.diffusions`).

``prediction="residual"`` (ResShift family only) trains x̂₀ = y₀ + f(x_t, t, lq) instead of x̂₀ = f(…): the network
learns the correction to bicubic upsampling, as SR3-style and dual-domain models do.  Every model's output layer starts
at zero, so such a model starts exactly at bicubic quality; it is the recipe that makes the tiny model useful after
minutes on a CPU.  The choice is stored in the checkpoint and re-applied by :func:`load_checkpoint`.

Checkpoints (``torch.save``) hold the model name and constructor overrides, the training configuration, the
optimiser and every random state, so a run resumes exactly and loading a checkpoint into another model is refused.
"""
from __future__ import annotations

import dataclasses
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from qdm_bench.errors import CheckpointError, ConfigError, UserError
from qdm_bench.signals import on_stop_signals
from qdm_bench.registry import ModelError, create_model, resolve

__all__ = ["TrainConfig", "TrainData", "train", "load_checkpoint", "read_checkpoint", "CheckpointError", "FORMAT",
           "PREDICTIONS", "ResidualPrediction", "PreconditionedResidual", "wrap_prediction",
           "TrainingInterrupted"]

FORMAT = "qdm-bench-checkpoint-v1"
PREDICTIONS = ("x0", "residual", "preconditioned")
SIGMA_DATA = 0.13  # default RMS of x0 − y0 in [-1, 1] (the built-in CT set at ×4 measures 0.132)


class ResidualPrediction(torch.nn.Module):
    """x̂₀ = y₀ + module(x_t, t, lq, …): y₀ is lq bicubic-upsampled to x_t's size, added to every returned stream."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module  # the name lets qdm.diffusion see through the wrapper (return_upstream support)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:  # down_patch, window, plan, … of the wrapped model
            return getattr(self.module, name)

    def skip(self, x_t: torch.Tensor, t: torch.Tensor, y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(base, output scale) with x̂₀ = base + scale·module(…): here (y₀, None)."""
        return y0, None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor, mask: torch.Tensor | None = None,
                **kwargs: Any):
        y0 = lq if lq.shape[-2:] == x_t.shape[-2:] else torch.nn.functional.interpolate(
            lq, size=x_t.shape[-2:], mode="bicubic", align_corners=False)
        base, scale = self.skip(x_t, t, y0)

        def finish(o: torch.Tensor) -> torch.Tensor:
            return (o if scale is None else scale.to(o.dtype) * o) + base.to(o.dtype)

        out = self.module(x_t, t, lq, mask=mask, **kwargs)
        return type(out)(finish(o) for o in out) if isinstance(out, (tuple, list)) else finish(out)


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in every checkpoint)."""

    model: str = "qdm-t"
    overrides: dict[str, Any] = field(default_factory=dict)
    images: str = "ct"
    image_size: int = 256
    holdout: int = 2
    crop: int = 64
    scale: int = 4
    batch: int = 8
    steps: int = 2000
    lr: float = 2e-4
    weight_decay: float = 0.0
    seed: int = 0
    ckpt_every: int = 500
    threads: int | None = None
    prediction: str = "x0"  # "x0" or "residual" (x̂₀ = y₀ + output; ResShift family)
    kappa: float | None = None  # ResShift noise scale κ (None: the family's default, 2.0 for QDM)
    lr_schedule: str = "constant"  # "constant" or "cosine" (decay to 0 at ``steps``)
    sigma_data: float | None = None  # preconditioned prediction: residual RMS (None: SIGMA_DATA)


class TrainData:
    """Random HR crops of the training images with their degraded LR condition, from a seeded generator."""

    def __init__(self, cfg: TrainConfig):
        from qdm_bench.data.images import load_image_set

        images = load_image_set(cfg.images, size=cfg.image_size)
        if len(images) <= cfg.holdout:
            raise ConfigError(f"image set {cfg.images!r} has {len(images)} image(s), not enough to hold out "
                             f"{cfg.holdout}; use a larger set or --holdout 0")
        self.train = images[: len(images) - cfg.holdout]
        self.held_out = images[len(images) - cfg.holdout:]
        for img in self.train:
            h, w = img.size
            if h < cfg.crop or w < cfg.crop:
                raise ConfigError(f"image {img.name} ({h}x{w}) is smaller than --crop {cfg.crop}; lower --crop or raise "
                                 "--image-size")
        if cfg.crop % cfg.scale:
            raise ConfigError(f"--crop {cfg.crop} must be a multiple of --scale {cfg.scale}")
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(cfg.seed)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x0, y0, lq): HR crops (batch, 3, crop, crop) in [-1, 1], their bicubic-upsampled LR y0 as the sampler
        builds it, and the LR condition lq at LR resolution (the model upsamples it the same way)."""
        from qdm_bench.data.images import degrade, lr_condition

        c, g = self.cfg.crop, self.generator
        crops = []
        for _ in range(self.cfg.batch):
            img = self.train[int(torch.randint(len(self.train), (1,), generator=g))].hr
            y = int(torch.randint(img.shape[-2] - c + 1, (1,), generator=g))
            x = int(torch.randint(img.shape[-1] - c + 1, (1,), generator=g))
            crop = img[:, y:y + c, x:x + c]
            if bool(torch.rand((), generator=g) < 0.5):
                crop = crop.flip(-1)
            crops.append(crop)
        hr = torch.stack(crops)
        lq = lr_condition(degrade(hr, self.cfg.scale))
        y0 = torch.nn.functional.interpolate(lq, size=(c, c), mode="bicubic", align_corners=False)
        return hr * 2 - 1, y0, lq


def _config_from(ckpt: dict[str, Any]) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in names})


def read_checkpoint(path: str | Path, model: str | None = None) -> dict[str, Any]:
    """The checkpoint dict, checked: the file exists, is a qdm-bench checkpoint and (if given) holds ``model``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; give the .pt file written by `qdm-bench train`")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never executes code from the file
    except Exception as e:  # noqa: BLE001 - any unreadable file is a bad checkpoint
        raise CheckpointError(f"checkpoint {path} cannot be read as data ({type(e).__name__}); it must be a "
                              "torch.save file of tensors and plain values, as qdm-bench writes (code in a checkpoint "
                              "is never executed)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a qdm-bench checkpoint (expected a dict with format {FORMAT!r}, "
                              "model, overrides and state_dict)")
    name = ckpt.get("model")
    if model is not None and resolve(model).name != resolve(name).name:
        raise CheckpointError(f"checkpoint {path} holds model {name!r}, not {model!r}; pass -m {name} or "
                              "another checkpoint")
    return ckpt


def load_checkpoint(path: str | Path, model: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the checkpoint's model and load its weights; ``model`` (if given) must be the checkpoint's model.

    Externally trained weights can be used too: save ``{"format": FORMAT, "model": NAME, "overrides": {...},
    "state_dict": model.state_dict()}`` with ``torch.save`` (add ``"config": {"prediction": "residual"}`` for a network
    trained to predict x₀ − y₀).
    """
    ckpt = read_checkpoint(path, model)
    name = ckpt["model"]
    net = create_model(name, **ckpt.get("overrides", {}))
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not fit {name} with overrides {ckpt.get('overrides')}: "
                              f"{first}") from None
    prediction = (ckpt.get("config") or {}).get("prediction", "x0")
    if prediction not in PREDICTIONS:
        raise CheckpointError(f"checkpoint {path} has prediction {prediction!r}; use one of {', '.join(PREDICTIONS)}")
    config = ckpt.get("config") or {}
    return wrap_prediction(net, prediction, config.get("kappa"), config.get("sigma_data")), ckpt


class PreconditionedResidual(ResidualPrediction):
    """x̂₀ = y₀ + c_skip·(x_t − y₀) + c_out·module(…): EDM-style preconditioning (Karras et al. 2022) for ResShift.

    With x_t − y₀ = (1 − η_t)(x₀ − y₀) + σ_t·ε, σ_t = κ√η_t, and residuals x₀ − y₀ of RMS s (``sigma_data``):
    c_skip = (1 − η_t)s² / ((1 − η_t)²s² + σ_t²) is the least-squares linear estimate of the residual from x_t − y₀
    (≈ 0 where noise dominates: regression from y₀; ≈ 1/(1 − η_t) where it does not: the inversion of the forward
    process), and c_out = s·σ_t / √((1 − η_t)²s² + σ_t²) is the standard deviation left after it, so the network
    predicts a unit-scale correction that fades as the noise does and cannot pile up over the late steps.
    ``schedule`` is the ResShift schedule the model trains and samples with (input x_t / √(κ²η_t + 1)).
    """

    def __init__(self, module: torch.nn.Module, schedule: Any, sigma_data: float):
        super().__init__(module)
        s2, eta = float(sigma_data) ** 2, schedule.etas.double()
        sigma2 = schedule.kappa ** 2 * eta
        denom = (1 - eta) ** 2 * s2 + sigma2
        self._skip = ((1 - eta) * s2 / denom).float()  # plain tensors, not state: checkpoints hold the bare network
        self._out = (float(sigma_data) * sigma2.sqrt() / denom.sqrt()).float()
        self._input_std = schedule.input_std.float()
        self.sigma_data = float(sigma_data)

    def skip(self, x_t: torch.Tensor, t: torch.Tensor, y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y₀ + c_skip·(x_t − y₀), c_out) at steps t; x_t arrives normalised and is scaled back first."""
        idx = t.reshape(-1).long().cpu()
        shape = (-1,) + (1,) * (x_t.dim() - 1)
        x_raw = x_t * self._input_std[idx].to(x_t).reshape(shape)
        base = y0 + self._skip[idx].to(x_t).reshape(shape) * (x_raw - y0)
        return base, self._out[idx].to(x_t).reshape(shape)


def wrap_prediction(model: torch.nn.Module, prediction: str, kappa: float | None = None,
                    sigma_data: float | None = None) -> torch.nn.Module:
    """The model as trained and sampled: itself for x0, :class:`ResidualPrediction` around it for residual,
    :class:`PreconditionedResidual` (with the ResShift schedule of ``kappa``) for preconditioned."""
    if prediction == "residual":
        return ResidualPrediction(model)
    if prediction == "preconditioned":
        from qdm.diffusion import eta_schedule

        return PreconditionedResidual(model, eta_schedule(kappa=2.0 if kappa is None else kappa),
                                      SIGMA_DATA if sigma_data is None else sigma_data)
    return model


def _save(path: Path, model, opt, cfg: TrainConfig, step: int, data: TrainData, diff_gen: torch.Generator,
          losses: list[float], seconds: float) -> None:
    ckpt = {
        "format": FORMAT, "model": cfg.model, "overrides": cfg.overrides, "config": dataclasses.asdict(cfg),
        "step": step, "state_dict": _bare(model).state_dict(), "optimizer": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "data": data.generator.get_state(), "diffusion": diff_gen.get_state()},
        "held_out": [img.name for img in data.held_out], "losses": losses,
        "train_seconds": seconds, "train_threads": torch.get_num_threads(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a half-written checkpoint


def _bare(model: torch.nn.Module) -> torch.nn.Module:
    """The registered network inside a prediction wrapper (checkpoints store its state dict)."""
    return model.module if isinstance(model, ResidualPrediction) else model  # also PreconditionedResidual


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after a step; a checkpoint of that step was written first."""

    def __init__(self, signum: int, step: int, path: Path):
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}; checkpoint written to {path}")
        self.signum, self.step, self.path = signum, step, path


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = True,
          progress: Callable[[int, float], None] | None = None) -> Path:
    """Train to ``cfg.steps`` steps, checkpointing to ``out_dir/last.pt`` every ``ckpt_every`` steps; returns it.

    With ``resume`` and an existing ``last.pt`` of the same configuration, training continues from it exactly (same
    weights as an uninterrupted run).  ``progress(step, loss)`` is called after every step.  SIGINT or SIGTERM
    (Ctrl-C, Slurm, ``timeout``) end training after the current step with a checkpoint of it, then raise
    :class:`TrainingInterrupted`; resuming continues exactly.
    """
    from qdm_bench.evaluate.diffusions import diffusion_for

    out = Path(out_dir)
    last = out / "last.pt"
    for name, value in (("steps", cfg.steps), ("batch", cfg.batch), ("crop", cfg.crop), ("ckpt_every",
                                                                                          cfg.ckpt_every)):
        if value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    info = resolve(cfg.model)
    if cfg.prediction not in PREDICTIONS:
        raise ConfigError(f"unknown --prediction {cfg.prediction!r}; use one of {', '.join(PREDICTIONS)}")
    if cfg.prediction != "x0" and info.diffusion != "resshift":
        raise ConfigError(f"--prediction {cfg.prediction} applies to ResShift-family models; {cfg.model} trains with its "
                         f"own {info.diffusion!r} process (leave --prediction x0)")
    try:
        resolve(cfg.model).check_resolution(cfg.crop, cfg.crop)
    except ModelError as e:
        raise ModelError(f"{e} (set by --crop)") from None
    diffusion = diffusion_for(info, cfg.kappa)  # refuses a model that is no denoiser before anything is written
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    net = create_model(cfg.model, **cfg.overrides)
    model = wrap_prediction(net, cfg.prediction, cfg.kappa, cfg.sigma_data)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    data = TrainData(cfg)
    diff_gen = torch.Generator().manual_seed(cfg.seed + 1)
    step, losses, seconds_before, t0 = 0, [], 0.0, time.perf_counter()
    if resume and last.exists():
        loaded, ckpt = load_checkpoint(last, cfg.model)
        old = _config_from(ckpt)
        if dataclasses.replace(old, steps=cfg.steps, ckpt_every=cfg.ckpt_every, threads=cfg.threads) != cfg:
            raise ConfigError(f"{last} was trained with a different configuration ({old}); use another --out or the "
                             "same options")
        model.load_state_dict(loaded.state_dict())
        opt.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        data.generator.set_state(ckpt["rng"]["data"])
        diff_gen.set_state(ckpt["rng"]["diffusion"])
        step, losses = int(ckpt["step"]), list(ckpt.get("losses", []))
        seconds_before = float(ckpt.get("train_seconds", 0.0))
    model.train()
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"unknown --lr-schedule {cfg.lr_schedule!r}; use constant or cosine")
    with on_stop_signals(interrupt=False) as stop:
        step = _loop(cfg, model, opt, data, diffusion, diff_gen, step, losses, last, progress, stop,
                     lambda: seconds_before + time.perf_counter() - t0)
    if not last.exists():
        _save(last, model, opt, cfg, step, data, diff_gen, losses, seconds_before + time.perf_counter() - t0)
    return last


def _loop(cfg, model, opt, data, diffusion, diff_gen, step, losses, last, progress, stop, seconds) -> int:
    """The training steps from ``step`` to ``cfg.steps``; checkpoints, and stops after a step on a signal."""
    while step < cfg.steps:
        if cfg.lr_schedule == "cosine":  # a function of the step alone, so a resumed run follows the same curve
            for group in opt.param_groups:
                group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        x0, y0, lq = data.batch()
        loss = diffusion.training_loss(model, x0, y0, lq, generator=diff_gen)["loss"]
        value = float(loss.detach())
        if not math.isfinite(value):
            raise UserError(f"training diverged at step {step + 1} (loss {value}); lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(value)
        if progress:
            progress(step, value)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or stop["signum"] is not None:
            _save(last, model, opt, cfg, step, data, diff_gen, losses, seconds())
        if stop["signum"] is not None:
            raise TrainingInterrupted(stop["signum"], step, last)
    return step
