"""Sweeps: expand model patterns and resolutions into validated measurement cells, and summarise their rows.

The CLI commands ``params``, ``macs``, ``memory``, ``speed`` and ``run`` are thin wrappers over :func:`make_cells`,
:func:`qdm_bench.cells.run_cells` and :func:`summary_table`.
"""
from __future__ import annotations

import itertools
import re
from typing import Any, Iterable, Sequence

import torch

from qdm_bench.cells import DTYPES, Cell
from qdm_bench.registry import ModelError, create_model, list_models, resolve

__all__ = ["FIGURE5_MODELS", "expand_models", "parse_resolution", "make_cells", "summary_table", "SUMMARY_COLUMNS"]

FIGURE5_MODELS = ("qdm-s", "qdm-b", "qdm-l", "dit-s/8", "dit-l/8", "dit-s/2", "unet", "swin-unet")


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
        raise ValueError(f"resolution {text!r} is not understood; give a positive size like 1024 or 512x768")
    h = int(m.group(1))
    return h, int(m.group(2) or h)


def _check_size(model: str, h: int, w: int, overrides: dict[str, Any]) -> None:
    info = resolve(model)
    with torch.device("meta"):
        multiple = getattr(create_model(model, **overrides), "input_multiple", None)
    try:
        info.check_resolution(h, w, multiple)
    except ModelError as e:
        raise ModelError(f"{e}, or drop {model} from --models") from None


def make_cells(models: Sequence[str], resolutions: Sequence[tuple[int, int]], *, batches: Sequence[int] = (1,),
               dtypes: Sequence[str] = ("fp32",), thresholds: Sequence[float | None] = (None,),
               densities: Sequence[float | None] = (None,), metrics: Sequence[str], **cell_kwargs: Any) -> list[Cell]:
    """Every combination as a :class:`Cell`, validated before any compute (sizes, dtypes, thresholds, densities).

    Thresholds and densities apply to mask-using models (QDM) only; other models get one cell per remaining
    combination.  ``cell_kwargs`` go to every Cell (device, threads, cpu_max_res, window, patch, …).
    """
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"unknown dtype {d!r}; use one of {', '.join(DTYPES)}")
    if cell_kwargs.get("device", "cpu") == "cpu" and "fp16" in dtypes:
        raise ValueError("fp16 autocast is not supported on CPU; use --dtype bf16 on CPU, or fp16 with --device cuda")
    for s in thresholds:
        if s is not None and not (0.0 <= s <= 2.0):
            raise ValueError(f"threshold {s} is out of range; give a value in [0, 2] (images in [-1, 1]; 0 = lossless)")
    for d in densities:
        if d is not None and not (0.0 <= d <= 1.0):
            raise ValueError(f"density {d} is out of range; give the fraction of windows to select, in [0, 1]")
    for b in batches:
        if b < 1:
            raise ValueError(f"batch must be at least 1, got {b}")
    masks: list[tuple[float | None, float | None]] = [(s, None) for s in thresholds if s is not None]
    masks += [(None, d) for d in densities if d is not None]
    masks = masks or [(None, None)]
    cells: list[Cell] = []
    overrides_keys = ("window", "patch", "chunk_size")
    for model in models:
        info = resolve(model)
        model_masks = masks if info.uses_mask else [(None, None)]
        probe = Cell(model=model, height=8, width=8, **{k: cell_kwargs[k] for k in overrides_keys if k in cell_kwargs})
        overrides = probe.overrides()
        for (h, w) in resolutions:
            _check_size(model, h, w, overrides)
        for (h, w), b, dt, (s, d) in itertools.product(resolutions, batches, dtypes, model_masks):
            cells.append(Cell(model=model, height=h, width=w, batch=b, dtype=dt, threshold=s, density=d,
                              metrics=tuple(metrics), **cell_kwargs))
    return cells


def _fmt_bytes(value: Any, estimated: Any) -> str:
    if value is None:
        return ""
    return f"{value / 2**20:,.0f}" + (" (est.)" if estimated else "")


def _num(value: Any, scale: float = 1.0, fmt: str = "{:,.2f}") -> str:
    return "" if value is None else fmt.format(value / scale)


SUMMARY_COLUMNS = ("model", "res", "batch", "dtype", "patch", "window", "image", "mask", "sampler", "mean of", "posterior",
                   "params (M)",
                   "deployed params (M)", "GMACs", "GBOPs", "GOPs", "GMACs/SR", "attn %", "peak MiB", "median ms", "p10-p90 ms", "img/s", "PSNR-Y", "SSIM-Y",
                   "bicubic PSNR-Y", "bicubic SSIM-Y", "status")


def summary_table(rows: Sequence[dict[str, Any]], tablefmt: str = "simple") -> str:
    """A tabulate table of result rows: cost columns, memory marked ``(est.)`` when estimated, and status."""
    from tabulate import tabulate

    table = []
    for r in rows:
        mask = ""
        if r.get("threshold") is not None:
            mask = f"s={r['threshold']:g}"
        elif r.get("density") is not None:
            mask = f"d={r['density']:g}"
        if r.get("patch_density") is not None and (r.get("threshold") is not None or r.get("density") is not None):
            mask += f" {100 * r['patch_density']:.1f}%"
        if r.get("window_density") is not None and r.get("active_windows") is not None:
            mask += f" {r['active_windows']}/{r['total_windows']} win"
        macs, attn = r.get("macs"), r.get("attention_macs")
        lat = ""
        if r.get("latency_p10_ms") is not None:
            lat = f"{r['latency_p10_ms']:,.1f}-{r['latency_p90_ms']:,.1f}"
        status = r.get("status") or ""
        if r.get("cached"):
            status += " (cached)"
        if status.startswith(("error", "oom")) and r.get("message"):
            status += f": {str(r['message'])[:60]}"
        table.append([
            r.get("model"), f"{r.get('height')}x{r.get('width')}", r.get("batch"), r.get("dtype"),
            "" if r.get("patch") is None else r["patch"], "" if r.get("window") is None else r["window"],
            r.get("image") or "", mask.strip(), r.get("sampler") or "",
            "" if (r.get("ensemble") or 1) == 1 else r["ensemble"], r.get("posterior") or "",
            _num(r.get("params"), 1e6), _num(r.get("params_deploy"), 1e6), _num(macs, 1e9, "{:,.1f}"),
            _num(r.get("bops"), 1e9, "{:,.1f}"), _num(r.get("ops"), 1e9, "{:,.2f}"),
            _num(r.get("macs_per_sr"), 1e9, "{:,.0f}"),
            "" if not macs or attn is None else f"{100 * attn / macs:.0f}",
            _fmt_bytes(r.get("peak_mem_bytes"), r.get("mem_estimated")),
            _num(r.get("latency_median_ms"), 1.0, "{:,.1f}"), lat, _num(r.get("throughput_img_s"), 1.0, "{:,.2f}"),
            _num(r.get("psnr"), 1.0, "{:.2f}"), _num(r.get("ssim"), 1.0, "{:.4f}"),
            _num(r.get("bicubic_psnr"), 1.0, "{:.2f}"), _num(r.get("bicubic_ssim"), 1.0, "{:.4f}"),
            status,
        ])
    keep = [i for i, col in enumerate(SUMMARY_COLUMNS) if col in ("model", "res", "status") or any(row[i] not in (
        "", None) for row in table)]  # drop columns that no row measured
    return tabulate([[row[i] for i in keep] for row in table], headers=[SUMMARY_COLUMNS[i] for i in keep],
                    tablefmt=tablefmt, disable_numparse=True)
