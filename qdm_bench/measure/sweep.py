"""Sweeps: expand model patterns and resolutions into measurement cells.

The CLI commands ``params``, ``macs``, ``memory``, ``speed`` and ``run`` are thin wrappers over :func:`make_cells`,
:func:`qdm_bench.measure.runner.run_cells` and :func:`qdm_bench.report.summary.summary_table`.
"""
from __future__ import annotations

import itertools
import re
from typing import Any, Iterable, Sequence

from qdm_bench.errors import ConfigError
from qdm_bench.measure.cell import Cell
from qdm_bench.registry import ModelError, list_models, resolve
from qdm_bench.zoo import FIGURE5_MODELS

__all__ = ["FIGURE5_MODELS", "expand_models", "parse_resolution", "make_cells"]


def expand_models(specs: Iterable[str] | None) -> list[str]:
    """Model names from comma-separated names, wildcards (``dit-*/8``) and ``package.module:factory`` paths.

    Unknown names raise :class:`ModelError` naming close matches; the default is the Figure-5 set.
    """
    items = [s.strip() for spec in (specs or ()) for s in spec.split(",") if s.strip()]
    if not items:
        return list(FIGURE5_MODELS)
    names: list[str] = []
    for item in items:
        if any(ch in item for ch in "*?[") and ":" not in item:
            found = list_models(item)
            if not found:
                raise ModelError(f"no registered model matches {item!r}; run `qdm-bench models` to list them")
            names += found
        else:
            resolve(item)  # validates now, with close matches in the error
            names.append(item)
    return list(dict.fromkeys(names))


def parse_resolution(text: str | int) -> tuple[int, int]:
    """``1024`` → (1024, 1024); ``512x768`` → (512, 768)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX×]\s*(\d+))?\s*", str(text))
    if not m or int(m.group(1)) <= 0 or (m.group(2) is not None and int(m.group(2)) <= 0):
        raise ConfigError(f"resolution {text!r} is not understood; give a positive size like 1024 or 512x768")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def make_cells(models: Sequence[str], resolutions: Sequence[tuple[int, int]], *, batches: Sequence[int] = (1,),
               dtypes: Sequence[str] = ("fp32",), thresholds: Sequence[float | None] = (None,),
               densities: Sequence[float | None] = (None,), metrics: Sequence[str], **cell_kwargs: Any) -> list[Cell]:
    """Every combination as a :class:`Cell` (checked by :func:`qdm_bench.measure.validate.validate_cells` before
    any runs).

    Thresholds and densities apply to mask-using models only; other models get one cell per remaining
    combination.  ``cell_kwargs`` go to every cell (flat names: device, threads, cpu_max_res, window, patch, …).
    """
    masks: list[tuple[float | None, float | None]] = [(s, None) for s in thresholds if s is not None]
    masks += [(None, d) for d in densities if d is not None]
    masks = masks or [(None, None)]
    cells: list[Cell] = []
    for model in models:
        model_masks = masks if resolve(model).uses_mask else [(None, None)]
        for (h, w), b, dt, (s, d) in itertools.product(resolutions, batches, dtypes, model_masks):
            cells.append(Cell.create(model, h, w, batch=b, dtype=dt, threshold=s, density=d, metrics=tuple(metrics),
                                     **cell_kwargs))
    return cells
