"""A neutral, timm-like model registry: ``register_model``, ``create_model``, ``list_models``, ``resolve``.

Every denoiser the harness compares follows one calling convention (``docs/model-protocol.md``)::

    prediction = model(x_t, t, lq, mask=None)

The registry holds one :class:`ModelInfo` per name.  It imports nothing of the project: the built-in models are
a table of ``name → "module:factory"`` plus metadata in :mod:`qdm_bench.zoo`, read on first use; a factory's
module is imported only when that model is built, so one model whose module fails to import never leaves the
others unusable.  User models come from ``package.module:factory`` paths (see :func:`resolve`) and from the
entry-point group ``qdm_bench.models`` (each entry point names a factory callable, or a module whose import
registers models with :func:`register_model`).
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Callable

__all__ = [
    "ModelInfo", "ModelError", "register_model", "create_model", "list_models", "model_info", "resolve",
    "example_inputs", "example_timesteps", "load_state_dict", "read_state_dict", "checked_state_dict", "ENTRY_POINT_GROUP",
]

ENTRY_POINT_GROUP = "qdm_bench.models"
BUILTIN_TABLE = "qdm_bench.zoo"  # the module whose MODELS table lists the built-in models (read lazily)


class ModelError(ValueError):
    """A user-facing error about a model name, its options or its inputs (printed as one line by the CLI)."""


@dataclass(frozen=True)
class ModelInfo:
    """What the harness needs to know about a registered model, without reading the model's code."""

    name: str
    factory: Callable[..., Any] | str  # a callable, or "package.module:function" imported on first build
    family: str
    space: str = "latent"  # "latent" or "pixel"
    multiple: int = 16  # H and W must be multiples of this (an instance's ``input_multiple`` may refine it)
    uses_mask: bool = False
    in_channels: int = 3
    lq_channels: int = 3
    out_channels: int = 3
    num_steps: int = 15  # network evaluations (NFE) of one super-resolution
    diffusion: str = "resshift"  # the diffusion process train/quality use (qdm_bench.evaluate.diffusions)
    t_max: int | None = None  # timesteps t are integers in [0, t_max); None: [0, num_steps)
    uniform_t: bool = False  # the model needs one timestep for the whole batch (e.g. BI-DiffSR's TaR/TaA groups)
    default_cfg: dict[str, Any] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)  # CLI option (window, patch, …) → factory keyword
    description: str = ""

    def load_factory(self) -> Callable[..., Any]:
        """The factory callable (imported now when given as a path)."""
        if callable(self.factory):
            return self.factory
        mod_name, _, attr = str(self.factory).partition(":")
        try:
            return getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ModelError(f"model {self.name} cannot be built: {mod_name}:{attr} does not import ({e}); "
                             "reinstall qdm-bench with its dependencies (pip install -e .)") from None

    def check_resolution(self, height: int, width: int, multiple: int | None = None) -> None:
        """Raise ModelError unless (height, width) is a valid input size (``multiple`` overrides the registered one,
        for an instance whose options change it: ``model.input_multiple``)."""
        m = multiple or self.multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            lo_h, lo_w = max(m, height // m * m), max(m, width // m * m)
            raise ModelError(
                f"{self.name} needs H and W to be positive multiples of {m}, got {height}x{width}; "
                f"use e.g. {lo_h}x{lo_w}"
            )

    def option_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        """Factory keywords for CLI-level architecture options (``{"patch": 4}`` → ``{"up_patch": 4}`` for QDM)."""
        out = {}
        for name, value in options.items():
            if value is None:
                continue
            if name not in self.options:
                have = ", ".join(f"--{o.replace('_', '-')}" for o in self.options) or "none"
                raise ModelError(f"--{name.replace('_', '-')} does not apply to {self.name} (its options: {have}); "
                                 f"drop it or choose another model")
            out[self.options[name]] = value
        return out


_REGISTRY: dict[str, ModelInfo] = {}
_loaded = False


def register_model(name: str | None = None, **info: Any) -> Callable:
    """Decorator registering a model factory under ``name`` (default: the function name) with its ModelInfo fields."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        key = name or fn.__name__
        if key in _REGISTRY and _REGISTRY[key].factory is not fn:
            raise ModelError(f"model name {key!r} is registered twice")
        info.setdefault("description", (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "")
        _REGISTRY[key] = ModelInfo(name=key, factory=fn, **info)
        return fn

    return deco


def _load_builtin() -> None:
    """Read the built-in table and the entry-point plug-ins once; a plug-in that fails to load is skipped with a
    warning, and nothing is half-registered (the table is added as a whole, before any plug-in)."""
    global _loaded
    if _loaded:
        return
    table = importlib.import_module(BUILTIN_TABLE).MODELS
    for key, info in table.items():
        _REGISTRY.setdefault(key, info)
    _loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plug-in must not break the built-in models
            warnings.warn(f"model plug-in {ep.name!r} ({ep.value}) failed to load and is skipped: "
                          f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
            continue
        if callable(obj) and ep.name not in _REGISTRY and not isinstance(obj, type(importlib)):
            register_model(ep.name, family="plugin")(obj)


def resolve(spec: str) -> ModelInfo:
    """The ModelInfo of a registered name or of a ``package.module:factory`` path."""
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
            raise ModelError(f"module {mod_name!r} has no callable {attr!r}; give -m package.module:factory")
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


def create_model(name: str, checkpoint_path: str | None = None, **kwargs: Any):
    """Build a registered model (or ``package.module:factory``): ``kwargs`` override the factory's defaults.

    ``checkpoint_path``: a state dict saved with ``torch.save`` (bare, or under ``"state_dict"`` as qdm-bench
    checkpoints keep it) loaded strictly after the build, without executing code from the file.
    """
    info = resolve(name)
    cfg = {**info.default_cfg, **kwargs}
    factory = info.load_factory()
    state = None
    if checkpoint_path is not None:  # read and checked against a meta-device build first: a wrong file fails fast
        import torch

        state = read_state_dict(checkpoint_path)
        with torch.device("meta"):
            try:
                probe = factory(**cfg)
            except TypeError:
                probe = None  # reported by the real build below
        if probe is not None and hasattr(probe, "state_dict"):
            state = checked_state_dict(probe, state, checkpoint_path, info.name)
    try:
        model = factory(**cfg)
    except TypeError as e:
        if "unexpected keyword" in str(e) or "got multiple values" in str(e):
            raise ModelError(f"{info.name} does not take these options ({e}); check the keyword names") from None
        raise
    if not hasattr(model, "forward"):
        if info.family == "user":  # a path that turned out not to be a model factory is not kept registered
            _REGISTRY.pop(info.name, None)
        raise ModelError(f"{name}: the factory returned a {type(model).__name__}, not a torch.nn.Module; "
                         "give -m package.module:factory of a model factory")
    model.qdm_bench_info = replace(info, default_cfg=cfg)  # type: ignore[attr-defined]
    if checkpoint_path is not None:
        load_state_dict(model, state)
    return model


def read_state_dict(path: str) -> dict[str, Any]:
    """The tensors of a checkpoint file: a bare state dict or one under ``"state_dict"``, a DDP ``module.`` prefix
    removed (``weights_only=True``: nothing in the file is executed)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"checkpoint {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise ModelError(f"checkpoint {path} is a folder; give the checkpoint file") from None
    except Exception as e:  # noqa: BLE001 - unreadable, or a pickle that needs code to run
        raise ModelError(f"checkpoint {path} cannot be read as weights ({type(e).__name__}); it must be a "
                         "torch.save'd state dict of tensors (code in a checkpoint is never executed)") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"checkpoint {path} holds no state dict of tensors")
    return _without_ddp_prefix(state)


def _without_ddp_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Keys without the ``module.`` prefix DistributedDataParallel adds (when every key has it)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def checked_state_dict(model: Any, state: dict[str, Any], path: str = "(state dict)",
                       name: str | None = None) -> dict[str, Any]:
    """``state`` in ``model``'s own layout (its ``adapt_state_dict``, if any, converts a foreign one), with every
    key and shape checked: one line names the first that does not fit (the model may be on the meta device)."""
    state = _without_ddp_prefix(state)
    adapt = getattr(model, "adapt_state_dict", None)
    if adapt is not None:
        try:
            state = adapt(state)
        except ValueError as e:
            raise ModelError(f"checkpoint {path}: {e}") from None
    name = name or getattr(getattr(model, "qdm_bench_info", None), "name", type(model).__name__)
    own = model.state_dict()
    for key, value in own.items():
        if key not in state:
            raise ModelError(f"checkpoint {path} does not fit {name}: it has no {key} {tuple(value.shape)}; is it a "
                             "checkpoint of another model? (pick that one with -m)")
        got = getattr(state[key], "shape", None)
        if got is None or tuple(got) != tuple(value.shape):
            raise ModelError(f"checkpoint {path} does not fit {name}: {key} is "
                             f"{tuple(got) if got is not None else type(state[key]).__name__} in the file but "
                             f"{tuple(value.shape)} in the model; is it a checkpoint of another size? "
                             "(pick that model with -m)")
    extra = [k for k in state if k not in own]
    if extra:
        raise ModelError(f"checkpoint {path} does not fit {name}: the file has {len(extra)} key(s) the model lacks, "
                         f"the first {extra[0]}; is it a checkpoint of another model? (pick that one with -m)")
    return state


def load_state_dict(model: Any, path: str | dict[str, Any]) -> None:
    """Load a checkpoint (a path, or its state dict) into ``model``, checked by :func:`checked_state_dict`."""
    if isinstance(path, dict):
        state, where = path, "(state dict)"
    else:
        state, where = read_state_dict(path), path
    model.load_state_dict(checked_state_dict(model, state, where))


def example_timesteps(info: ModelInfo, batch: int, generator: Any):
    """Random timesteps (batch,) in the model's range [0, t_max or num_steps), one for all where it needs that."""
    import torch

    t = torch.randint(0, info.t_max or info.num_steps, (1 if info.uniform_t else batch,), generator=generator)
    return t.expand(batch)


def example_inputs(name: str, res: int | tuple[int, int], batch: int = 1, device: Any = "cpu", dtype: Any = None,
                   density: float | None = None, seed: int = 0) -> dict[str, Any]:
    """Random inputs ``dict(x_t, t, lq, mask)`` for ``name`` at ``res``; for mask-using models, a mask of ``density``.

    The resolution is validated first, so a bad size fails before any compute.  ``density`` is the fraction of
    windows selected (a mask-using model's ``random_mask(batch, height, width, density, generator)``); ``None``
    means no mask (the dense path).
    """
    import torch

    info = resolve(name)
    dtype = dtype or torch.float32
    h, w = (res, res) if isinstance(res, int) else res
    info.check_resolution(h, w)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, info.in_channels, h, w, generator=g, dtype=dtype).to(device)
    lq = torch.randn(batch, info.lq_channels, h, w, generator=g, dtype=dtype).to(device)
    t = example_timesteps(info, batch, g).to(device)
    mask = None
    if info.uses_mask and density is not None:
        with torch.device("meta"):
            model = create_model(name)
        mask = model.random_mask(batch, h, w, density, generator=g).to(device)
    return {"x_t": x, "t": t, "lq": lq, "mask": mask}
