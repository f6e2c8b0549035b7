"""The results file: one JSON object per line, appended as cells finish, read back for resuming and reports.

Row schema (every row has every key; absent values are null):

| key | meaning |
|---|---|
| ``key`` | identity of the cell (all its parameters plus the qdm-bench version); used to resume |
| ``model``, ``family``, ``space`` | registered name, family, latent/pixel |
| ``params``, ``params_paper`` | learnable parameters; the paper's own convention where one exists (QDM: Table 5) |
| ``height``, ``width``, ``batch``, ``dtype``, ``device``, ``compile`` | the cell's input and execution settings |
| ``threshold``, ``density``, ``window``, ``patch`` | QDM mask request (quadtree threshold or window density) and sizes |
| ``image``, ``image_size``, ``scale`` | the image a threshold mask was computed from (file or built-in key), its HR side and LR factor |
| ``image_kind``, ``image_windowing`` | natural / ct / mr / phantom / user, and the rule that mapped its raw values to [0, 1] |
| ``patch_density``, ``window_density``, ``active_windows``, ``total_windows`` | the mask actually used (QDM) |
| ``macs``, ``attention_macs``, ``macs_per_sr``, ``num_steps`` | MACs of one network evaluation (attention included), its attention part, and of a whole super-resolution |
| ``peak_mem_bytes``, ``peak_reserved_bytes``, ``mem_method``, ``mem_estimated`` | peak memory above resident weights and inputs; ``mem_estimated`` marks a fake-tensor estimate |
| ``latency_median_ms``, ``latency_p10_ms``, ``latency_p90_ms``, ``latency_n`` | forward latency statistics |
| ``throughput_img_s``, ``windows_per_s`` | batch / median; selected windows / median (QDM) |
| ``threads``, ``device_name``, ``torch_version``, ``cuda_version``, ``git_commit``, ``timestamp`` | environment |
| ``command`` | the qdm-bench command line that produced the row |
| ``status``, ``message``, ``elapsed_s`` | ``ok``, ``oom``, ``error`` or ``skipped``; the reason; wall time of the cell |
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["COLUMNS", "FINISHED", "ResultsError", "empty_row", "read_results", "append_result", "finished_keys"]

COLUMNS = [
    "key", "model", "family", "space", "params", "params_paper", "height", "width", "batch", "dtype", "device",
    "compile", "threshold", "density", "window", "patch", "image", "image_size", "scale", "image_kind",
    "image_windowing", "patch_density",
    "window_density", "active_windows",
    "total_windows", "macs", "attention_macs", "macs_per_sr", "bops", "ops", "params_deploy", "cost_extra", "num_steps", "peak_mem_bytes", "peak_reserved_bytes",
    "mem_method", "mem_estimated", "latency_median_ms", "latency_p10_ms", "latency_p90_ms", "latency_n",
    "throughput_img_s", "windows_per_s", "ckpt", "tile", "sampler", "posterior", "ensemble", "psnr", "ssim", "psnr_rgb", "lpips", "clipiqa", "musiq",
    "bicubic_psnr", "bicubic_ssim", "threads", "device_name", "torch_version", "cuda_version", "git_commit",
    "timestamp", "status", "message", "elapsed_s", "command",
]
FINISHED = {"ok", "oom", "skipped"}  # an ``error`` row is retried on the next run


class ResultsError(ValueError):
    """A results file that cannot be read (printed as one line by the CLI)."""


def empty_row(**values: Any) -> dict[str, Any]:
    """A row with every schema key, null where not given."""
    unknown = set(values) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown result columns: {sorted(unknown)}")
    return {c: values.get(c) for c in COLUMNS}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _end_last_line(path: Path) -> None:
    """Make sure the file ends with a newline before a row is appended.

    An unterminated last line that is a whole row (a hand-edited file) gets its newline.  One that is not (a write
    cut short by a kill: an unfinished cell, which :func:`read_results` ignores) is dropped; otherwise the next row
    would be glued onto it and the file would become unreadable.
    """
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        cut, pos = 0, end
        while pos > 0:  # the start of the last line: scan back for a newline, in blocks
            start = max(0, pos - 65536)
            f.seek(start)
            i = f.read(pos - start).rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        f.seek(cut)
        try:
            whole = isinstance(json.loads(f.read(end - cut).decode("utf-8")), dict)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            whole = False
        if whole:
            f.seek(end)
            f.write(b"\n")
        else:
            f.truncate(cut)


def append_result(path: str | Path, row: dict[str, Any]) -> None:
    """Append one row as a JSON line and flush it to disk, so an interrupted run loses nothing already measured.

    A partial last line left by an interrupted write (an unfinished cell, ignored by :func:`read_results`) is
    dropped first (see :func:`_end_last_line`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _end_last_line(path)
    line = json.dumps({k: _clean(v) for k, v in row.items()}, sort_keys=False)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_results(paths: str | Path | Iterable[str | Path]) -> list[dict[str, Any]]:
    """Rows of one or more results files; a truncated last line (an interrupted write) is ignored."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    rows: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ResultsError(f"results file {path} does not exist; check the path or run a measurement first")
        if path.is_dir():
            raise ResultsError(f"{path} is a folder; give a results file (.jsonl) written by qdm-bench")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not an object")
            except ValueError:
                if i == len(lines):  # a partial last line from a killed run: the cell is simply not finished
                    continue
                raise ResultsError(f"results file {path} line {i} is not a qdm-bench JSON row; "
                                   "fix or delete that line (or pass a new --out file)") from None
            rows.append(row)
    return rows


def finished_keys(path: str | Path) -> set[str]:
    """Keys of cells with a finished row (status ok, oom or skipped) in a results file; empty if it does not exist."""
    if not Path(path).exists():
        return set()
    return {r["key"] for r in read_results(path) if r.get("status") in FINISHED and r.get("key")}
