"""The summary table a measurement command prints: one line per row, columns that no row measured dropped."""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["summary_table", "summary_rows", "SUMMARY_COLUMNS"]


def _fmt_bytes(value: Any, estimated: Any, mark: str = " (est.)") -> str:
    if value is None:
        return ""
    return f"{value / 2**20:,.0f}" + (mark if estimated else "")


def _num(value: Any, scale: float = 1.0, fmt: str = "{:,.2f}") -> str:
    return "" if value is None else fmt.format(value / scale)


SUMMARY_COLUMNS = ("model", "res", "batch", "dtype", "patch", "window", "image", "mask", "sampler", "mean of", "posterior", "convention",
                   "params (M)",
                   "deployed params (M)", "GMACs", "GBOPs", "GOPs", "GMACs/SR", "attn %", "peak MiB", "median ms", "p10-p90 ms", "img/s", "PSNR-Y", "SSIM-Y",
                   "bicubic PSNR-Y", "bicubic SSIM-Y", "status")


def summary_table(rows: Sequence[dict[str, Any]], tablefmt: str = "simple") -> str:
    """A tabulate table of result rows: cost columns, memory marked ``(est.)`` when estimated, and status."""
    from tabulate import tabulate

    headers, table = summary_rows(rows)
    return tabulate(table, headers=headers, tablefmt=tablefmt, disable_numparse=True)


def summary_rows(rows: Sequence[dict[str, Any]], mark: str = " (est.)") -> tuple[list[str], list[list[Any]]]:
    """(headers, cells) of the summary: one line per row, columns no row measured dropped; ``mark`` follows an
    estimated memory value."""
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
            "" if (r.get("metric_convention") or "float") == "float" else r["metric_convention"],
            _num(r.get("params"), 1e6), _num(r.get("params_deploy"), 1e6), _num(macs, 1e9, "{:,.1f}"),
            _num(r.get("bops"), 1e9, "{:,.1f}"), _num(r.get("ops"), 1e9, "{:,.2f}"),
            _num(r.get("macs_per_sr"), 1e9, "{:,.0f}"),
            "" if not macs or attn is None else f"{100 * attn / macs:.0f}",
            _fmt_bytes(r.get("peak_mem_bytes"), r.get("mem_estimated"), mark),
            _num(r.get("latency_median_ms"), 1.0, "{:,.1f}"), lat, _num(r.get("throughput_img_s"), 1.0, "{:,.2f}"),
            _num(r.get("psnr"), 1.0, "{:.2f}"), _num(r.get("ssim"), 1.0, "{:.4f}"),
            _num(r.get("bicubic_psnr"), 1.0, "{:.2f}"), _num(r.get("bicubic_ssim"), 1.0, "{:.4f}"),
            status,
        ])
    keep = [i for i, col in enumerate(SUMMARY_COLUMNS) if col in ("model", "res", "status") or any(row[i] not in (
        "", None) for row in table)]  # drop columns that no row measured
    return [SUMMARY_COLUMNS[i] for i in keep], [[row[i] for i in keep] for row in table]
