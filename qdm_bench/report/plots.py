"""Matplotlib figures (Agg, no pyplot state) of the results, saved as PNG and PDF with a caption line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from qdm_bench.report.frames import MIB, _dense, _figure5_frame, _label, _res, _res_pair, _threshold_frame


def _caption(frame: pd.DataFrame) -> str:
    """Device name(s) and measurement date(s) of the rows."""
    names = frame["device_name"].fillna(frame["device"]).dropna().unique() if len(frame) else []
    days = sorted(pd.to_datetime(frame.get("timestamp", pd.Series(dtype=object)), utc=True, errors="coerce",
                                 format="ISO8601").dropna().dt.strftime("%Y-%m-%d").unique())
    when = "date not recorded" if not days else days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    return f"qdm-bench · device: {', '.join(map(str, names)) or 'not recorded'} · measured {when}"


def _save(fig: Figure, out: str | Path, caption: str) -> list[Path]:
    """Place the caption line, lay out, and save as PNG and PDF (``out`` without or with a .png/.pdf suffix)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out
    stem.parent.mkdir(parents=True, exist_ok=True)
    fig.text(0.5, 0.012, caption, ha="center", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    paths = [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths


def _wide(values: pd.Series, ratio: float = 30.0) -> bool:
    """True when positive values span more than ``ratio`` (a log axis reads better)."""
    v = values[values > 0].dropna()
    return len(v) > 1 and v.max() / v.min() > ratio


def _mark_missing(ax: Any, x: np.ndarray, missing: np.ndarray) -> None:
    """Write ``n/a`` at the bar positions without a value."""
    for xi in x[missing]:
        ax.text(xi, 0.02, "n/a", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8,
                color="0.4")


def _memory_panel(ax: Any, f: pd.DataFrame, x: np.ndarray) -> None:
    """Bars of measured (solid) and estimated (hatched, labelled) peak memory; both side by side when present."""
    meas, est = (f["mem_measured"] / MIB).to_numpy(), (f["mem_est"] / MIB).to_numpy()
    both = ~np.isnan(meas) & ~np.isnan(est)
    width, shift = np.where(both, 0.4, 0.8), np.where(both, 0.2, 0.0)
    ok_m, ok_e = ~np.isnan(meas), ~np.isnan(est)
    if ok_m.any():
        ax.bar(x[ok_m] - shift[ok_m], meas[ok_m], width[ok_m], color="C0", label="measured")
    if ok_e.any():
        bars = ax.bar(x[ok_e] + shift[ok_e], est[ok_e], width[ok_e], color="white", edgecolor="C1", hatch="///",
                      label="estimated (lower bound)")
        ax.bar_label(bars, labels=["estimated"] * int(ok_e.sum()), fontsize=6, rotation=90, padding=2)
    _mark_missing(ax, x, ~ok_m & ~ok_e)
    if _wide(pd.Series(np.concatenate([meas[ok_m], est[ok_e]]))):
        ax.set_yscale("log")
    ax.margins(y=0.25)
    ax.set_ylabel("peak memory (MiB)")
    ax.set_title("Peak memory above weights")
    if ok_m.any() or ok_e.any():
        ax.legend(fontsize=7)


def _latency_panel(ax: Any, f: pd.DataFrame, x: np.ndarray) -> None:
    """Bars of median latency with p10–p90 whiskers."""
    med = f["latency_median_ms"].to_numpy(dtype=float)
    ok = ~np.isnan(med)
    if ok.any():
        lo = np.nan_to_num(med - f["latency_p10_ms"].to_numpy(dtype=float))
        hi = np.nan_to_num(f["latency_p90_ms"].to_numpy(dtype=float) - med)
        ax.bar(x[ok], med[ok], 0.8, color="C2", yerr=np.vstack([lo[ok], hi[ok]]), capsize=3)
        if _wide(pd.Series(med[ok])):
            ax.set_yscale("log")
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "latency not measured", transform=ax.transAxes, ha="center", va="center", color="0.4")
    _mark_missing(ax, x, ~ok)
    ax.set_ylabel("latency (ms)")
    ax.set_title("Forward latency (median, p10–p90)")


def plot_figure5(df: pd.DataFrame, res: int | tuple[int, int], out: str | Path) -> list[Path]:
    """Figure 5 at one resolution: peak memory and latency bars per model; returns the PNG and PDF paths."""
    f = _figure5_frame(df, res)
    if f.empty:
        raise ValueError(f"no finished unmasked rows at {_res(*_res_pair(res))}; nothing to plot")
    x = np.arange(len(f))
    fig = Figure(figsize=(max(8.0, 1.1 * len(f) + 2), 4.8))
    ax_mem, ax_lat = fig.subplots(1, 2)
    _memory_panel(ax_mem, f, x)
    _latency_panel(ax_lat, f, x)
    for ax in (ax_mem, ax_lat):
        ax.set_xticks(x, f["label"], rotation=30, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(f) - 0.4)
        ax.set_xlabel("model")
    batch = f["batch"].dropna().unique()
    fig.suptitle(f"Peak memory and latency at {_res(*_res_pair(res))}"
                 + (f", batch {int(batch[0])}" if len(batch) == 1 else ""))
    return _save(fig, out, _caption(f))


def plot_cost_vs_res(df: pd.DataFrame, out: str | Path) -> list[Path]:
    """GMACs per image (and peak memory when present) against resolution per model, log-log."""
    f = _dense(df)
    f = f[f["macs"].notna() | f["peak_mem_bytes"].notna()].reset_index(drop=True) if not f.empty else f
    if f.empty:
        raise ValueError("no finished unmasked rows with MACs or memory; nothing to plot")
    f = f.assign(label=_label(f, ["batch", "dtype", "compile", "window", "patch"]),
                 side=np.sqrt(f["height"] * f["width"]))
    memory = f["peak_mem_bytes"].notna().any()
    fig = Figure(figsize=(11.0 if memory else 6.5, 4.8))
    axes = fig.subplots(1, 2 if memory else 1, squeeze=False)[0]
    for i, (label, g) in enumerate(f.groupby("label", sort=False)):
        g = g.sort_values("side")
        color = f"C{i % 10}"
        gm = g[g["macs"].notna()]
        axes[0].plot(gm["side"], gm["macs"] / gm["batch"].fillna(1) / 1e9, "o-", color=color, label=label)
        if memory:
            for col, style, fill in (("mem_measured", "-", color), ("mem_est", "--", "white")):
                gg = g[g[col].notna()]
                axes[1].plot(gg["side"], gg[col] / MIB, style, marker="o", color=color, markerfacecolor=fill)
    sides = sorted(f["side"].unique())
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sides, [f"{s:g}" for s in sides])
        ax.minorticks_off()
        ax.set_xlabel("resolution √(H·W) (px)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("GMACs per image (one evaluation)")
    axes[0].set_title("Compute vs resolution")
    axes[0].legend(fontsize=7)
    if memory:
        axes[1].set_ylabel("peak memory (MiB)")
        axes[1].set_title("Peak memory vs resolution")
        axes[1].legend([Line2D([], [], color="k", marker="o"), Line2D([], [], color="k", ls="--", marker="o",
                                                                       markerfacecolor="white")],
                       ["measured", "estimated (lower bound)"], fontsize=7)
    fig.suptitle("Cost vs resolution")
    return _save(fig, out, _caption(f))


def plot_threshold(df: pd.DataFrame, out: str | Path) -> list[Path]:
    """Patch density and GMACs against the quadtree threshold (full mask as a dashed line), two panels."""
    f = _threshold_frame(df)
    if f.empty:
        raise ValueError("no threshold sweep among the finished rows; nothing to plot")
    f = f.assign(label=_label(f, ["batch", "dtype", "device_name", "window", "patch"]))
    fig = Figure(figsize=(11.0, 4.6))
    ax_d, ax_m = fig.subplots(1, 2)
    for i, (label, g) in enumerate(f.groupby("block", sort=False)):
        color, name = f"C{i % 10}", g["label"].iloc[0] + (f" {_res(g['height'].iloc[0], g['width'].iloc[0])}")
        swept, full = g[g["swept"]], g[~g["swept"]]
        for ax, col, scale in ((ax_d, "patch_density", 0.01), (ax_m, "macs", 1e9)):
            ax.plot(swept["threshold"], swept[col] / scale, "o-", color=color, label=name)
            if not full.empty and pd.notna(full[col].iloc[0]):
                ax.axhline(full[col].iloc[0] / scale, color=color, ls="--", lw=1, label=f"{name}, full mask")
    for ax in (ax_d, ax_m):
        ax.set_xlabel("quadtree threshold s (LR range units, images in [-1, 1])")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax_d.set_ylabel("patch density (%)")
    ax_d.set_title("Mask density vs threshold")
    ax_m.set_ylabel("GMACs per evaluation")
    ax_m.set_title("Compute vs threshold")
    fig.suptitle("Quadtree threshold ablation")
    return _save(fig, out, _caption(f))
