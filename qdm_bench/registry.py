"""A timm-like model registry: ``@register_model``, ``create_model``, ``list_models``.

Every denoiser the harness compares follows one calling convention::

    prediction = model(x_t, t, lq, mask=None)

``x_t`` is (B, C, H, W), ``t`` is (B,) integer step indices, ``lq`` is the low-resolution condition and ``mask`` the
optional quadtree mask (models that do not use it accept and ignore it).  Each registered factory carries a
:class:`ModelInfo` that tells the harness what it needs without reading the model's code.

Users add their own architectures without editing the package, either with ``--model package.module:factory`` on
the CLI (see :func:`resolve`) or through the entry-point group ``qdm_bench.models`` (each entry point names a module
whose import registers models, or a factory callable).
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

__all__ = [
    "ModelInfo", "ModelError", "register_model", "create_model", "list_models", "model_info", "resolve",
    "example_inputs", "example_timesteps",
]

ENTRY_POINT_GROUP = "qdm_bench.models"
_BUILTIN_MODULES = ("qdm.model", "baselines")


class ModelError(ValueError):
    """A user-facing error about a model name or its inputs (printed as one line by the CLI)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the harness needs to know about a registered model."""

    name: str
    factory: Callable[..., torch.nn.Module]
    family: str
    space: str = "latent"  # "latent" or "pixel"
    multiple: int = 16  # H and W must be multiples of this
    uses_mask: bool = False
    in_channels: int = 3
    lq_channels: int = 3
    out_channels: int = 3
    num_steps: int = 15  # network evaluations (NFE) of one super-resolution
    diffusion: str = "resshift"  # the diffusion process train/quality use (see qdm_bench.diffusions)
    t_max: int | None = None  # timesteps t are integers in [0, t_max); None: [0, num_steps)
    uniform_t: bool = False  # the model needs one timestep for the whole batch (e.g. BI-DiffSR's TaR/TaA groups)
    default_cfg: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def check_resolution(self, height: int, width: int, multiple: int | None = None) -> None:
        """Raise ModelError unless (height, width) is a valid input size for this model.

        ``multiple`` overrides the registered one, for an instance whose options change it (``model.input_multiple``).
        """
        m = multiple or self.multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            lo_h, lo_w = max(m, height // m * m), max(m, width // m * m)
            raise ModelError(
                f"{self.name} needs H and W to be positive multiples of {m}, got {height}x{width}; "
                f"use e.g. {lo_h}x{lo_w}"
            )


_REGISTRY: dict[str, ModelInfo] = {}
_loaded = False


def register_model(name: str | None = None, **info: Any) -> Callable:
    """Decorator registering a model factory under ``name`` (default: the function name) with its ModelInfo fields."""

    def deco(fn: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        key = name or fn.__name__
        if key in _REGISTRY and _REGISTRY[key].factory is not fn:
            raise ModelError(f"model name {key!r} is registered twice")
        info.setdefault("description", (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "")
        _REGISTRY[key] = ModelInfo(name=key, factory=fn, **info)
        return fn

    return deco


def _load_builtin() -> None:
    """Import the built-in model modules and the entry-point plug-ins once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        if callable(obj) and ep.name not in _REGISTRY and not isinstance(obj, type(importlib)):
            register_model(ep.name, family="plugin")(obj)


def resolve(spec: str) -> ModelInfo:
    """Return the ModelInfo for a registered name or a ``package.module:factory`` path."""
    _load_builtin()
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if ":" in spec:
        mod_name, _, attr = spec.partition(":")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as e:
            raise ModelError(f"cannot import module {mod_name!r} for model {spec!r}: {e}") from None
        if spec in _REGISTRY:  # the module registered it under this very name
            return _REGISTRY[spec]
        fn = getattr(mod, attr, None)
        if fn is None or not callable(fn):
            raise ModelError(f"module {mod_name!r} has no callable {attr!r}; give --model package.module:factory")
        for info in _REGISTRY.values():  # decorated with @register_model already
            if info.factory is fn:
                return info
        register_model(spec, family="user")(fn)
        return _REGISTRY[spec]
    close = difflib.get_close_matches(spec, list(_REGISTRY), n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else "; run `qdm-bench models` to list them"
    raise ModelError(f"unknown model {spec!r}{hint}")


def model_info(name: str) -> ModelInfo:
    """Alias of :func:`resolve`."""
    return resolve(name)


def list_models(pattern: str | list[str] | None = None) -> list[str]:
    """Registered model names matching shell-style wildcard(s), in registration order."""
    _load_builtin()
    if pattern is None:
        return list(_REGISTRY)
    pats = [pattern] if isinstance(pattern, str) else list(pattern)
    return [n for n in _REGISTRY if any(fnmatch.fnmatchcase(n, p) for p in pats)]


def create_model(name: str, **overrides: Any) -> torch.nn.Module:
    """Build a registered model (or ``package.module:factory``) with its default config updated by ``overrides``."""
    info = resolve(name)
    cfg = {**info.default_cfg, **overrides}
    model = info.factory(**cfg)
    model.qdm_bench_info = replace(info, default_cfg=cfg)  # type: ignore[attr-defined]
    return model


def example_timesteps(info: ModelInfo, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Random timesteps (batch,) in the model's range [0, t_max or num_steps), one for all where it needs that."""
    t = torch.randint(0, info.t_max or info.num_steps, (1 if info.uniform_t else batch,), generator=generator)
    return t.expand(batch)


def example_inputs(
    name: str,
    res: int | tuple[int, int],
    batch: int = 1,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    density: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Random inputs ``dict(x_t, t, lq, mask)`` for ``name`` at ``res``; for mask-using models, a mask of ``density``.

    The resolution is validated first, so a bad size fails before any compute.  ``density`` is the fraction of
    downstream windows selected (QDM); ``None`` means no mask (the dense path).
    """
    info = resolve(name)
    h, w = (res, res) if isinstance(res, int) else res
    info.check_resolution(h, w)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, info.in_channels, h, w, generator=g, dtype=dtype).to(device)
    lq = torch.randn(batch, info.lq_channels, h, w, generator=g, dtype=dtype).to(device)
    t = example_timesteps(info, batch, g).to(device)
    mask = None
    if info.uses_mask and density is not None:
        from qdm.quadtree import random_window_mask

        cfg = info.default_cfg
        mask = random_window_mask(
            batch, h // cfg.get("down_patch", 2), w // cfg.get("down_patch", 2), cfg.get("window", 8), density,
            generator=g,
        ).to(device)
    return {"x_t": x, "t": t, "lq": lq, "mask": mask}
