"""Regression tracking: compare two results files cell by cell (docs/measurement.md §0 rule 8, §7).

* Counts (parameters, MACs, windows, mask density, estimated memory) are deterministic: any change is flagged.
* Measured memory and absolute latency are compared against generous tolerances (ratios new / baseline), and only
  between rows measured on the same device; latency is gated on the median, never the mean.
* Speed ratios inside one run (QDM sparse / dense of the same model, resolution and dtype) are compared between
  runs: they cancel most of the machine's speed, so their tolerance can be tighter.
* Quality columns (psnr, ssim, lpips, …) when present: a drop beyond a tolerance is a regression.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from qdm_bench.measure.results import read_results

__all__ = ["Finding", "Tolerances", "compare_rows", "compare_files", "human", "IDENTITY", "EXACT"]

IDENTITY = ("model", "height", "width", "batch", "dtype", "device", "compile", "threshold", "density", "window",
            "patch", "image", "image_size", "scale", "tile", "sampler", "posterior",
            "ensemble", "metric_convention")
EXACT = ("params", "params_paper", "macs", "attention_macs", "macs_per_sr", "active_windows", "total_windows",
         "patch_density", "bops", "params_deploy")
QUALITY_HIGHER = ("psnr", "ssim", "clipiqa", "musiq")  # higher is better
QUALITY_LOWER = ("lpips",)  # lower is better


@dataclass(frozen=True)
class Tolerances:
    """How much a measured value may worsen before it counts as a regression."""

    time_ratio: float = 2.0  # absolute median latency: new / baseline
    speed_ratio: float = 0.25  # in-run sparse/dense latency ratio: relative increase
    memory_ratio: float = 1.5  # measured peak memory: new / baseline
    cpu_memory_slack: int = 128 * 2**20  # CPU resident-set growth: differences below this are noise (allocator)
    psnr_db: float = 0.1
    ssim: float = 0.002
    lpips: float = 0.005
    other_quality: float = 0.01  # relative, for clipiqa / musiq


@dataclass
class Finding:
    """One compared value of one cell."""

    cell: str
    metric: str
    baseline: Any
    new: Any
    verdict: str  # "ok", "regression", "improved", "changed" (informational), "missing", "added", "skipped"
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict in ("regression", "missing")


_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _short(value: float) -> str:
    """A count with an SI prefix and three significant digits: ``3.81 G``."""
    for scale, prefix in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}"
    return f"{value:g}"


def human(metric: str, value: Any) -> str:
    """A compared value in the unit a reader expects: counts exact with a short form, MiB, ms, dB, %."""
    if value is None or isinstance(value, (str, bool)):
        return "" if value is None else str(value)
    v = float(value)
    if not math.isfinite(v):
        return str(value)
    if metric == "patch_density":
        return f"{100 * v:.2f} %"
    if metric in EXACT:  # exact counts: every digit, and the short form to read it
        return f"{int(v):,} ({_short(v)})" if v.is_integer() and abs(v) >= 1e4 else f"{v:,g}"
    if metric.startswith("peak memory"):
        return f"{v / 2**20:,.1f} MiB"
    if metric.startswith("median latency"):
        return f"{v:,.1f} ms"
    if metric == "psnr":
        return f"{v:.2f} dB"
    if metric in ("ssim", "lpips", "clipiqa") or metric.startswith("sparse/dense"):
        return f"{v:.4f}"
    return f"{v:,.4g}"


DEFAULTS = {"metric_convention": "float"}  # identity fields added later: rows written before them had the default


def _identity(row: dict[str, Any]) -> tuple:
    return tuple(row.get(k) if row.get(k) is not None else DEFAULTS.get(k) for k in IDENTITY)


def _label(row: dict[str, Any]) -> str:
    parts = [str(row.get("model")), f"{row.get('height')}x{row.get('width')}", f"b{row.get('batch')}",
             str(row.get("dtype"))]
    for k, fmt in (("threshold", "s={}"), ("density", "d={}"), ("window", "win={}"), ("patch", "p={}"),
                   ("image", "[{}]")):
        if row.get(k) is not None:
            parts.append(fmt.format(row[k]))
    if row.get("metric_convention") not in (None, "float"):
        parts.append(f"{row['metric_convention']} metrics")
    return " ".join(parts)


def _latest(rows: Sequence[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """Finished rows by cell identity; a later row of the same cell fills in the columns it measured."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        if r.get("status") not in ("ok", "oom", "error"):
            continue
        key = _identity(r)
        if key in out and r.get("status") == "ok":
            merged = dict(out[key])
            merged.update({k: v for k, v in r.items() if v is not None})
            out[key] = merged
        else:
            out[key] = dict(r)
    return out


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _sparse_dense_ratios(rows: dict[tuple, dict[str, Any]]) -> dict[tuple, float]:
    """Latency of every masked QDM cell divided by its dense sibling's (same model, size, batch, dtype, device)."""
    dense = {}
    for key, r in rows.items():
        if r.get("threshold") is None and r.get("density") is None and _num(r.get("latency_median_ms")):
            dense[(r.get("model"), r.get("height"), r.get("width"), r.get("batch"), r.get("dtype"), r.get("device"),
                   r.get("window"), r.get("patch"))] = r["latency_median_ms"]
    ratios = {}
    for key, r in rows.items():
        sib = (r.get("model"), r.get("height"), r.get("width"), r.get("batch"), r.get("dtype"), r.get("device"),
               r.get("window"), r.get("patch"))
        if (r.get("threshold") is not None or r.get("density") is not None) and sib in dense \
                and _num(r.get("latency_median_ms")):
            ratios[key] = r["latency_median_ms"] / dense[sib]
    return ratios


def compare_rows(baseline: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]],
                 tol: Tolerances = Tolerances(), allow_missing: bool = False) -> list[Finding]:
    """Every comparison between two sets of result rows, matched by cell identity (not by code version)."""
    base, cur = _latest(baseline), _latest(new)
    findings: list[Finding] = []
    for key, b in base.items():
        label = _label(b)
        n = cur.get(key)
        if n is None:
            findings.append(Finding(label, "cell", b.get("status"), None, "skipped" if allow_missing else "missing",
                                    "not in the new results"))
            continue
        if b.get("status") == "ok" and n.get("status") != "ok":
            findings.append(Finding(label, "status", "ok", n.get("status"), "regression", str(n.get("message"))[:120]))
            continue
        if b.get("status") != "ok":
            findings.append(Finding(label, "status", b.get("status"), n.get("status"),
                                    "improved" if n.get("status") == "ok" else "ok"))
            continue
        for metric in EXACT:
            bv, nv = b.get(metric), n.get(metric)
            if bv is None or nv is None:
                continue
            findings.append(Finding(label, metric, bv, nv, "ok" if bv == nv else "regression",
                                    "" if bv == nv else "deterministic count changed"))
        findings += _memory(label, b, n, tol)
        findings += _latency(label, b, n, tol)
        findings += _quality(label, b, n, tol)
    for key, n in cur.items():
        if key not in base:
            findings.append(Finding(_label(n), "cell", None, n.get("status"), "added", "not in the baseline"))
    base_ratios, new_ratios = _sparse_dense_ratios(base), _sparse_dense_ratios(cur)
    for key, br in base_ratios.items():
        if key in new_ratios:
            nr = new_ratios[key]
            verdict = "regression" if nr > br * (1 + tol.speed_ratio) else "ok"
            findings.append(Finding(_label(base[key]), "sparse/dense latency", round(br, 4), round(nr, 4), verdict,
                                    f"tolerance +{100 * tol.speed_ratio:.0f}%"))
    return findings


def _same_device(b: dict[str, Any], n: dict[str, Any]) -> bool:
    return b.get("device_name") == n.get("device_name") and b.get("threads") == n.get("threads")


def _memory(label: str, b: dict[str, Any], n: dict[str, Any], tol: Tolerances) -> list[Finding]:
    bv, nv = _num(b.get("peak_mem_bytes")), _num(n.get("peak_mem_bytes"))
    if bv is None or nv is None:
        return []
    if bool(b.get("mem_estimated")) != bool(n.get("mem_estimated")):
        return [Finding(label, "peak memory", bv, nv, "skipped", "measured vs estimated: not comparable")]
    if b.get("mem_estimated"):
        return [Finding(label, "peak memory (estimated)", int(bv), int(nv), "ok" if bv == nv else "regression",
                        "" if bv == nv else "deterministic estimate changed")]
    if not _same_device(b, n):
        return [Finding(label, "peak memory", bv, nv, "skipped", "different device or threads")]
    ratio = nv / bv if bv > 0 else math.inf
    verdict = "regression" if ratio > tol.memory_ratio else ("improved" if ratio < 1 / tol.memory_ratio else "ok")
    note = f"x{ratio:.2f} (tolerance x{tol.memory_ratio})"
    slack = tol.cpu_memory_slack if str(n.get("device") or "").startswith("cpu") else 0
    if verdict != "ok" and abs(nv - bv) < slack:  # RSS growth of small cells moves by tens of MiB run to run
        verdict, note = "ok", note + f", within the CPU slack of {slack // 2**20} MiB"
    return [Finding(label, "peak memory", int(bv), int(nv), verdict, note)]


def _latency(label: str, b: dict[str, Any], n: dict[str, Any], tol: Tolerances) -> list[Finding]:
    bv, nv = _num(b.get("latency_median_ms")), _num(n.get("latency_median_ms"))
    if bv is None or nv is None:
        return []
    if not _same_device(b, n):
        return [Finding(label, "median latency ms", bv, nv, "skipped", "different device or threads")]
    ratio = nv / bv if bv > 0 else math.inf
    verdict = "regression" if ratio > tol.time_ratio else ("improved" if ratio < 1 / tol.time_ratio else "ok")
    return [Finding(label, "median latency ms", round(bv, 3), round(nv, 3), verdict,
                    f"x{ratio:.2f} (tolerance x{tol.time_ratio})")]


def _quality(label: str, b: dict[str, Any], n: dict[str, Any], tol: Tolerances) -> list[Finding]:
    out = []
    for metric in QUALITY_HIGHER + QUALITY_LOWER:
        bv, nv = _num(b.get(metric)), _num(n.get(metric))
        if bv is None or nv is None:
            continue
        limit = {"psnr": tol.psnr_db, "ssim": tol.ssim, "lpips": tol.lpips}.get(metric, tol.other_quality * abs(bv))
        worse = (bv - nv) if metric in QUALITY_HIGHER else (nv - bv)
        verdict = "regression" if worse > limit else ("improved" if worse < -limit else "ok")
        out.append(Finding(label, metric, bv, nv, verdict, f"tolerance {limit:g}"))
    return out


def compare_files(baseline: str, new: str, tol: Tolerances = Tolerances(), allow_missing: bool = False,
                  models: Sequence[str] | None = None) -> list[Finding]:
    """:func:`compare_rows` on two results files (ResultsError on a missing or corrupt file); ``models``:
    shell-style patterns restricting the comparison to those models' cells."""
    import fnmatch

    def keep(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rows if not models or any(fnmatch.fnmatchcase(str(r.get("model")), p) for p in models)]

    return compare_rows(keep(read_checked(baseline, "baseline")), keep(read_checked(new, "new results")), tol,
                        allow_missing)


NUMERIC = (*EXACT, "peak_mem_bytes", "latency_median_ms", *QUALITY_HIGHER, *QUALITY_LOWER, "height", "width",
           "batch")


def read_checked(path: str, what: str) -> list[dict[str, Any]]:
    """The rows of a results file compare can trust: not empty, not cut short, every compared field of the right
    type; otherwise ResultsError naming the file, the line and the field."""
    import json
    from pathlib import Path

    from qdm_bench.errors import ResultsError

    read_results(path)  # existence, folder and unreadable-line checks, with their messages
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    if text and not text.endswith("\n"):
        raise ResultsError(f"{what} {path} ends in a line cut short (line {text.count(chr(10)) + 1}); it is "
                           "truncated: measure it again or delete that line")
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        for name in NUMERIC:
            value = row.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ResultsError(f"{what} {path} line {i}: field {name!r} is {value!r}, not a number; fix or "
                                   "delete that line")
        rows.append(row)
    if not rows:
        raise ResultsError(f"{what} {path} has no rows; give a results file written by a qdm-bench measurement")
    return rows
