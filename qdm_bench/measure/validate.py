"""The one validation layer: every setting of every cell is checked before any cell runs.

:func:`validate_cells` raises :class:`qdm_bench.errors.ConfigError` (one line naming the option and the fix) for
the first invalid setting; it builds each distinct model on the meta device once to check sizes and options.
An invalid option therefore never becomes an ``error`` row.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

from qdm.diffusion import POSTERIOR_MODES
from qdm_bench.errors import ConfigError
from qdm_bench.measure.cell import DTYPES, METRIC_CONVENTIONS, METRICS, SAMPLERS, Cell

__all__ = ["validate_cells", "validate_cell", "resolve_device", "POSTERIOR_MODES", "meta_model"]

MAX_MASK_ELEMENTS = 2 ** 26  # patch-grid mask elements over the batch (e.g. QDM at 16384x16384, batch 1)
_META_MODELS: dict[tuple, Any] = {}
_IMAGES: set[tuple] = set()


def _check_image(image: str, size: int | None, scale: int) -> None:
    """Load a cell's image once per process, so an unreadable file is refused before any cell runs."""
    key = (image, size, scale)
    if key in _IMAGES:
        return
    from qdm_bench.data.images import image_by_name

    try:
        image_by_name(image, size=size, multiple=scale)
    except (ValueError, OSError) as e:
        raise ConfigError(f"--image {image}: {str(e).strip().splitlines()[0]}") from None
    _IMAGES.add(key)  # (name, options) → (info, model on the meta device): built once per process


def meta_model(name: str, options: tuple = ()) -> tuple[Any, Any]:
    """(ModelInfo, the model built on the meta device with CLI-level ``options``), built once per process and
    shared by validation and measurement (a meta model holds no data, and its forward changes nothing in it)."""
    key = (name, options)
    if key not in _META_MODELS:
        import torch

        from qdm_bench.registry import create_model, resolve

        info = resolve(name)
        with torch.device("meta"):
            model = create_model(name, **info.option_kwargs(dict(options))).eval()
        _META_MODELS[key] = (info, model)
    return _META_MODELS[key]



def resolve_device(device: str) -> str:
    """'auto' → cuda if available else cpu; 'cuda' without a GPU is a clear error."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("CUDA was requested but no CUDA device is available; use --device cpu (or auto)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def _int(value: Any, option: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{option} must be an integer >= {minimum}, got {value!r}")


def _number(value: Any, option: str, minimum: float, strict: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        rel = ">" if strict else ">="
        raise ConfigError(f"{option} must be a finite number {rel} {minimum:g}, got {value!r}")


def validate_cell(cell: Cell, check_model: bool = True) -> None:
    """Check one cell's settings (see :func:`validate_cells`); ``check_model=False`` skips building the model
    (the measurement itself checks the size and options on the model it builds)."""
    from qdm_bench.registry import ModelError

    i, m, s, r = cell.input, cell.mask, cell.sampling, cell.run
    unknown = set(cell.metrics) - set(METRICS)
    if unknown:
        raise ConfigError(f"unknown metrics {sorted(unknown)}; use {', '.join(METRICS)}")
    if i.dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {i.dtype!r}; use one of {', '.join(DTYPES)}")
    if r.device == "cpu" and i.dtype == "fp16":
        raise ConfigError("fp16 autocast is not supported on CPU; use --dtype bf16 on CPU, or fp16 with --device cuda")
    _int(i.batch, "--batch", 1)
    _int(i.scale, "--scale", 1)
    if i.image_size is not None:
        _int(i.image_size, "--image-size", 1)
        if i.image_size < i.scale:
            raise ConfigError(f"--image-size {i.image_size} is smaller than --scale {i.scale}")
    if i.image is not None and ":" not in str(i.image) and not Path(i.image).is_file():
        raise ConfigError(f"--image {i.image} does not exist or is not a file")
    if m.threshold is not None and m.density is not None:
        raise ConfigError("give either a threshold or a density, not both")
    if m.threshold is not None and not (isinstance(m.threshold, (int, float)) and 0.0 <= m.threshold <= 2.0):
        raise ConfigError(f"threshold {m.threshold} is out of range; give a value in [0, 2] (images in [-1, 1]; "
                          "0 = lossless)")
    if m.density is not None and not (isinstance(m.density, (int, float)) and 0.0 <= m.density <= 1.0):
        raise ConfigError(f"density {m.density} is out of range; give the fraction of windows to select, in [0, 1]")
    if s.sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler {s.sampler!r}; use stochastic or deterministic")
    _int(s.ensemble, "--ensemble", 1)
    if i.metric_convention not in METRIC_CONVENTIONS:
        raise ConfigError(f"unknown metric convention {i.metric_convention!r}; use {' or '.join(METRIC_CONVENTIONS)}")
    if s.ensemble > 1 and s.sampler != "stochastic":
        raise ConfigError(f"an ensemble averages stochastic samples; the {s.sampler} sampler gives one result "
                          "(use --ensemble 1)")
    if s.posterior is not None and s.posterior not in POSTERIOR_MODES:
        raise ConfigError(f"unknown posterior {s.posterior!r}; use {' or '.join(POSTERIOR_MODES)}")
    if s.tile is not None:
        _int(s.tile, "--tile", 0)
        if s.tile and (i.height % s.tile or i.width % s.tile or s.tile % i.scale):
            raise ConfigError(f"--tile {s.tile} must divide the image ({i.height}x{i.width}) and be a multiple of "
                              f"the scale {i.scale}")
    if "quality" in cell.metrics and cell.model.ckpt is None:
        raise ConfigError("the quality metric needs a checkpoint; pass --ckpt PATH (from `qdm-bench train`)")
    _int(r.warmup, "--warmup", 0)
    _int(r.reps, "--reps", 1)
    _int(r.cpu_max_res, "--cpu-max-res", 0)
    _number(r.warmup_s, "the warm-up time budget", 0)
    _number(r.max_time_s, "--max-time", 0, strict=True)
    if r.threads is not None:
        _int(r.threads, "--threads", 1)
    for name, value in cell.model.options:
        if name in ("window", "patch", "chunk_size"):
            _int(value, f"--{name.replace('_', '-')}", 1)
    if not check_model:
        return
    try:
        info, model = meta_model(cell.model.name, cell.model.options)
    except ModelError:
        raise
    except (ValueError, TypeError) as e:  # the model refused its options
        raise ConfigError(f"{cell.model.name} cannot be built with options {dict(cell.model.options)}: {e}") from None
    multiple = getattr(model, "input_multiple", None)
    try:
        info.check_resolution(i.height, i.width, multiple)
    except ModelError as e:
        raise ConfigError(f"{e}, or drop {cell.model.name} from --models") from None
    if info.uses_mask and hasattr(model, "mask_grid") and (set(cell.metrics) - {"params"} or not m.empty):
        gh, gw = model.mask_grid(i.height, i.width)
        if i.batch * gh * gw > MAX_MASK_ELEMENTS:
            raise ConfigError(f"{cell.model.name} at {i.height}x{i.width}, batch {i.batch} needs a {gh}x{gw} mask per "
                              f"image ({i.batch * gh * gw:,} elements) on the CPU to plan its windows, above the "
                              f"limit of {MAX_MASK_ELEMENTS:,}; lower --res or --batch")
    if i.image is not None:
        _check_image(i.image, i.image_size, i.scale)
    if not info.uses_mask and not m.empty:
        raise ConfigError(f"{cell.model.name} uses no mask; --threshold/--density apply to mask-using models only")


def validate_cells(cells: Iterable[Cell]) -> None:
    """Check every cell before any runs; raise ConfigError naming the first invalid setting."""
    for cell in cells:
        validate_cell(cell)
