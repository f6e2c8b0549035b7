"""Measuring one cell: the base row, then each asked plugin in turn, then the environment and status.

:func:`measure_cell` raises on failure; :func:`measure_in_process` turns out-of-memory and other failures into
rows (status ``oom`` / ``error``) whose ``traceback`` column keeps the full traceback.  Options are validated
before any cell runs (:mod:`qdm_bench.measure.validate`), so a failure here is a real failure of the measurement.
"""
from __future__ import annotations

import gc
import time
import traceback
from typing import Any, Callable

import torch

from qdm_bench.errors import ConfigError
from qdm_bench.measure.cell import Cell
from qdm_bench.measure.plugin import PLUGINS, CellContext, load_plugin
from qdm_bench.measure.results import empty_row

__all__ = ["measure_cell", "measure_in_process", "base_row", "error_row"]


def base_row(ctx: CellContext) -> dict[str, Any]:
    """The columns every row has: the cell's settings, parameters, the image's kind and the mask actually used."""
    from qdm_bench.measure.params import count_parameters

    cell, info, model = ctx.cell, ctx.info, ctx.meta_model
    i, m, s = cell.input, cell.mask, cell.sampling
    counts = count_parameters(model)
    quality = "quality" in cell.metrics
    row = empty_row(
        key=cell.key, model=cell.model.name, family=info.family, space=info.space, params=counts["learnable"],
        params_paper=counts["paper"], height=i.height, width=i.width, batch=i.batch, dtype=i.dtype,
        device=cell.run.device, compile=cell.model.compile, threshold=m.threshold, density=m.density,
        image=i.image, image_size=i.image_size if i.image else None, scale=i.scale if i.image else None,
        tile=s.tile, sampler=s.sampler if quality else None, posterior=s.posterior if quality else None,
        ensemble=s.ensemble if quality else None, metric_convention=i.metric_convention if quality else None,
        window=getattr(model, "window", None) if info.uses_mask else None,
        patch=getattr(model, "up_patch", getattr(model, "patch", None)), num_steps=info.num_steps,
    )
    if ctx.image is not None:  # record how the image was turned into [0, 1] (medical windowing rule)
        row.update(image_kind=ctx.image.kind, image_windowing=ctx.image.windowing)
    if ctx.plan is not None:
        plan = ctx.plan
        row.update(active_windows=plan.n_selected, total_windows=plan.n_windows, window_density=plan.density,
                   patch_density=1.0 if ctx.mask is None else float(ctx.mask.float().mean()))
    return row


def measure_cell(cell: Cell, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure one cell in this process and return its result row (raises on failure)."""
    from qdm_bench.measure.environment import environment_info

    from qdm_bench.measure.validate import validate_cell

    t_start = time.perf_counter()
    validate_cell(cell, check_model=False)  # run_cells validated everything; a direct call gets the same checks
    if cell.run.threads is not None and cell.run.device == "cpu":
        torch.set_num_threads(cell.run.threads)
    ctx = CellContext(cell, progress)
    row = base_row(ctx)
    if not ctx.info.uses_mask and not cell.mask.empty:
        raise ConfigError(f"{cell.model.name} uses no mask; a threshold or density applies to mask-using models")
    for name in PLUGINS:  # the table's order: macs, memory, speed, quality
        if name in cell.metrics:
            load_plugin(name).measure(ctx, row)
    ctx.release()
    env = environment_info(cell.run.device)
    row.update(threads=torch.get_num_threads(), device_name=env.get("device_name"),
               torch_version=env.get("torch_version"), cuda_version=env.get("cuda_version"),
               git_commit=env.get("git_commit"), timestamp=env.get("timestamp"), status="ok",
               message="; ".join(ctx.notes) or None, elapsed_s=time.perf_counter() - t_start)
    return row


def error_row(cell: Cell, status: str, message: str, elapsed: float, tb: str | None = None) -> dict[str, Any]:
    """The row of a failed cell: its settings, the status, one line of reason and the full traceback."""
    from qdm_bench.registry import ModelError, resolve

    try:
        info = resolve(cell.model.name)
        family, space = info.family, info.space
    except ModelError:
        family = space = None
    i, m = cell.input, cell.mask
    return empty_row(key=cell.key, model=cell.model.name, family=family, space=space, height=i.height,
                     width=i.width, batch=i.batch, dtype=i.dtype, device=cell.run.device,
                     compile=cell.model.compile, threshold=m.threshold, density=m.density,
                     window=cell.model.option("window"), patch=cell.model.option("patch"), image=i.image,
                     status=status, message=message[:2000], traceback=tb, elapsed_s=elapsed,
                     timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def measure_in_process(cell: Cell, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure a cell here, turning out-of-memory and other failures into rows (with their traceback)."""
    from qdm_bench.measure.environment import is_oom

    t0 = time.perf_counter()
    try:
        return measure_cell(cell, progress)
    except Exception as e:  # noqa: BLE001 - every failure becomes a result row
        tb = traceback.format_exc()
        if is_oom(e):  # free what the failed cell held, so the next cell in this process starts clean
            why = str(e).splitlines()[0] if str(e) else "out of memory"
            e.__traceback__ = None  # its frames hold the cell's tensors
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            return error_row(cell, "oom", why, time.perf_counter() - t0, tb)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return error_row(cell, "error", f"{type(e).__name__}: {msg}", time.perf_counter() - t0, tb)
