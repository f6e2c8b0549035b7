"""Matplotlib figures (Agg, no pyplot state) of the results, saved as PNG and PDF with a caption line.

Figure 5 (peak memory and latency per model) and cost vs resolution live here; the threshold curves and the
quality-vs-MACs Pareto plot in :mod:`~qdm_bench.report.plot_tradeoffs`; colours, units, ticks, the caption and
:func:`_save` in :mod:`~qdm_bench.report.plot_style`.  Each ``plot_*`` saves the Figure its ``_*_figure`` builder
returns (the builders are what the tests inspect).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import offset_copy

from qdm_bench.report import frames
from qdm_bench.report.frames import MIB, _dense, _figure5_frame, _label, _res, _res_pair
from qdm_bench.report.plot_style import (
    ESTIMATED_HATCH, ESTIMATED_LABEL, ESTIMATED_SHORT, MEASURED_LABEL, _caption, _save, fmt_value, frame_styles,
    latency_unit, linear_axis, log_axis, measured_caption, memory_unit, pow2_axis, ranked_names, wide,
)
from qdm_bench.report.plot_tradeoffs import (
    _pareto_figure, _pareto_frame, _threshold_figure, pareto_front, plot_pareto, plot_threshold,
)

__all__ = ["plot_figure5", "plot_cost_vs_res", "plot_threshold", "plot_pareto", "pareto_front", "_caption", "_save",
           "_figure5_figure", "_cost_figure", "_threshold_figure", "_pareto_figure", "_pareto_frame"]

NEUTRAL = "0.55"  # the colour of legend keys that stand for a drawing style, not a model


# ------------------------------------------------------------------------------------------------------ Figure 5

def _figure5_rows(df: pd.DataFrame, res: int | tuple[int, int]) -> pd.DataFrame:
    """The Figure 5 rows at one resolution that have a memory or latency value."""
    f = _figure5_frame(df, res)
    if f.empty:
        return f
    return f[f["mem_measured"].notna() | f["mem_est"].notna() | f["latency_median_ms"].notna()].reset_index(drop=True)


def _style_legend(ax: Any, measured: bool, estimated: bool) -> None:
    """One legend entry for measured bars (solid) and one for estimated ones (hatched), below the panel."""
    handles = ([Patch(facecolor=NEUTRAL, edgecolor="white", label=MEASURED_LABEL)] if measured else []) + \
        ([Patch(facecolor=NEUTRAL, edgecolor="white", hatch=ESTIMATED_HATCH, label=ESTIMATED_LABEL)]
         if estimated else [])
    if handles:  # below the x label: anchored 34 pt under the axes, whatever the figure's height
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(handles), fontsize=7,
                  frameon=False, bbox_transform=offset_copy(ax.transAxes, fig=ax.figure, y=-34, units="points"))


def _not_measured(ax: Any, y: np.ndarray, what: str = "not measured") -> None:
    """A grey note at the bar positions without a value."""
    for yi in y:
        ax.text(0.01, yi, what, transform=ax.get_yaxis_transform(), ha="left", va="center", fontsize=7,
                color="0.45", style="italic")


def _memory_bars(ax: Any, f: pd.DataFrame, y: np.ndarray, colors: list[Any]) -> list[float]:
    """Peak memory bars per model: measured solid, estimated hatched (both, half height, when a model has both)."""
    meas, est = (f["mem_measured"] / MIB).to_numpy(float), (f["mem_est"] / MIB).to_numpy(float)
    div, unit = memory_unit(np.concatenate([meas, est]))
    ok_m, ok_e = ~np.isnan(meas), ~np.isnan(est)
    both = ok_m & ok_e
    height, shift = np.where(both, 0.4, 0.72), np.where(both, 0.2, 0.0)
    cols = np.array(colors, dtype=object)
    for ok, sign, hatch in ((ok_m, -1, None), (ok_e, 1, ESTIMATED_HATCH)):
        if ok.any():
            vals = (meas if hatch is None else est)[ok] / div
            bars = ax.barh(y[ok] + sign * shift[ok], vals, height[ok], color=list(cols[ok]), edgecolor="white",
                           linewidth=0.6, hatch=hatch, gid="estimated" if hatch else "measured")
            ax.bar_label(bars, labels=[fmt_value(v) for v in vals], padding=3, fontsize=7)
    _not_measured(ax, y[~ok_m & ~ok_e], "no memory value")
    ax.set_xlabel(f"peak memory above weights ({unit})")
    ax.set_title(f"Peak memory ({unit})", fontsize=10)
    _style_legend(ax, bool(ok_m.any()), bool(ok_e.any()))
    return list(np.concatenate([meas[ok_m], est[ok_e]]) / div)


def _latency_bars(ax: Any, f: pd.DataFrame, y: np.ndarray, colors: list[Any]) -> list[float]:
    """Median latency bars per model with p10–p90 whiskers."""
    med = f["latency_median_ms"].to_numpy(float)
    div, unit = latency_unit(med)
    ok = ~np.isnan(med)
    lo = np.nan_to_num(med - f["latency_p10_ms"].to_numpy(float)) / div
    hi = np.nan_to_num(f["latency_p90_ms"].to_numpy(float) - med) / div
    vals = med[ok] / div
    bars = ax.barh(y[ok], vals, 0.72, color=list(np.array(colors, dtype=object)[ok]), edgecolor="white",
                   linewidth=0.6, xerr=np.vstack([lo[ok], hi[ok]]), capsize=2,
                   error_kw={"ecolor": "0.3", "elinewidth": 0.8}, gid="measured")
    ax.bar_label(bars, labels=[fmt_value(v) for v in vals], padding=3, fontsize=7)
    _not_measured(ax, y[~ok])
    ax.set_xlabel(f"forward latency, median with p10–p90 ({unit})")
    ax.set_title(f"Latency ({unit})", fontsize=10)
    return list(vals + hi[ok])


def _figure5_figure(df: pd.DataFrame, res: int | tuple[int, int]) -> tuple[Figure, str]:
    """The Figure 5 figure at one resolution and its caption: per model, peak memory and latency side by side.

    One panel per quantity that has a value at this resolution: memory alone when no latency was measured here.
    """
    h, w = _res_pair(res)
    f = _figure5_rows(df, (h, w))
    if f.empty:
        raise ValueError(f"no finished unmasked rows with memory or latency at {_res(h, w)}; nothing to plot")
    has_mem = bool(f["mem_measured"].notna().any() or f["mem_est"].notna().any())
    has_lat = bool(f["latency_median_ms"].notna().any())
    panels = [p for p, ok in (("memory", has_mem), ("latency", has_lat)) if ok]
    y = np.arange(len(f), dtype=float)
    styles = frame_styles(f, by="label")
    colors = [styles[str(lab)].color for lab in f["label"]]
    fig = Figure(figsize=(1.6 + 4.6 * len(panels), 1.9 + 0.42 * len(f)))
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    drawn = {}
    for ax, panel in zip(axes, panels):
        drawn[panel] = (_memory_bars if panel == "memory" else _latency_bars)(ax, f, y, colors)
    log = any(wide(v) for v in drawn.values())
    for ax, values in zip(axes, drawn.values()):
        if log:
            log_axis(ax, values, axis="x", headroom=4.0)
        else:
            linear_axis(ax, "x")
            ax.set_xlim(0, 1.2 * max(values))
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        ax.tick_params(axis="y", length=0)
    axes[0].set_yticks(y, f["label"], fontsize=8)
    axes[0].set_ylim(len(f) - 0.5, -0.5)  # first model on top
    batch = f["batch"].dropna().unique()
    what = "Peak memory and latency" if len(panels) == 2 else "Peak memory" if has_mem else "Latency"
    fig.suptitle(f"{what} at {_res(h, w)}" + (f", batch {int(batch[0])}" if len(batch) == 1 else ""))
    measured = f[f["mem_measured"].notna() | f["latency_median_ms"].notna()]
    notes = [] if has_lat else ["latency not measured at this size"]
    return fig, measured_caption(measured, bool(f["mem_est"].notna().any()), notes)


def plot_figure5(df: pd.DataFrame, res: int | tuple[int, int], out: str | Path) -> list[Path]:
    """Figure 5 at one resolution: peak memory and latency bars per model; returns the PNG and PDF paths."""
    fig, caption = _figure5_figure(df, res)
    return _save(fig, out, caption)


# -------------------------------------------------------------------------------------------- cost vs resolution

def _cost_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Unmasked rows with MACs or memory (the models' default configurations where frames can tell), labelled."""
    f = getattr(frames, "_models_frame", _dense)(df)
    if f.empty:
        return f
    f = f[f["macs"].notna() | f["peak_mem_bytes"].notna()].reset_index(drop=True)
    return f.assign(label=_label(f, ["batch", "dtype", "compile", "window", "patch"]),
                    side=np.sqrt(f["height"] * f["width"]))


def _runs(kinds: list[str]) -> list[tuple[str, int, int]]:
    """(kind, first, last) index ranges of a point sequence, each segment i→i+1 solid only between measured points."""
    runs: list[tuple[str, int, int]] = []
    for i in range(len(kinds) - 1):
        kind = "measured" if kinds[i] == kinds[i + 1] == "measured" else "estimated"
        if runs and runs[-1][0] == kind and runs[-1][2] == i:
            runs[-1] = (kind, runs[-1][1], i + 1)
        else:
            runs.append((kind, i, i + 1))
    return runs


def _memory_line(ax: Any, g: pd.DataFrame, div: float, color: Any, marker: str) -> None:
    """One line per model: solid through measured points, dashed through estimated ones, joined at the switch."""
    g = g[g["mem_measured"].notna() | g["mem_est"].notna()]
    kinds = ["measured" if pd.notna(m) else "estimated" for m in g["mem_measured"]]
    x = g["side"].to_numpy(float)
    v = g["mem_measured"].fillna(g["mem_est"]).to_numpy(float) / MIB / div
    for kind, a, b in _runs(kinds):
        ax.plot(x[a:b + 1], v[a:b + 1], "-" if kind == "measured" else "--", color=color, lw=1.5,
                gid=f"memory-{kind}")
    for kind, face in (("measured", color), ("estimated", "white")):
        sel = np.array([k == kind for k in kinds], dtype=bool)
        if sel.any():
            ax.plot(x[sel], v[sel], ls="none", marker=marker, color=color, markerfacecolor=face, markersize=6,
                    gid=f"memory-{kind}-points")


def _cost_figure(df: pd.DataFrame) -> tuple[Figure, str]:
    """GMACs per image (and peak memory when present) against resolution per model, log-log, and the caption."""
    f = _cost_frame(df)
    if f.empty:
        raise ValueError("no finished unmasked rows with MACs or memory; nothing to plot")
    memory = bool(f["peak_mem_bytes"].notna().any())
    styles = frame_styles(f, by="label")
    fig = Figure(figsize=(12.0 if memory else 6.8, 5.0))
    axes = fig.subplots(1, 2 if memory else 1, squeeze=False)[0]
    div, unit = memory_unit((f["peak_mem_bytes"] / MIB).to_numpy(float))
    gmacs = f["macs"] / f["batch"].fillna(1) / 1e9
    handles = {}
    for label in ranked_names(f["label"], dict(zip(f["label"].astype(str), f["model"].astype(str)))):
        g, st = f[f["label"].astype(str).eq(label)].sort_values("side"), styles[label]
        gm = g[g["macs"].notna()]
        if not gm.empty:
            axes[0].plot(gm["side"], gmacs[gm.index], ls="-", marker=st.marker, color=st.color, markersize=6,
                         lw=1.5, label=str(label))
        if memory:
            _memory_line(axes[1], g, div, st.color, st.marker)
        handles[str(label)] = (Line2D([], [], color=st.color, marker=st.marker, ls="-"),
                               bool(g["peak_mem_bytes"].notna().any()))
    for ax in axes:
        pow2_axis(ax, f["side"])
        ax.set_xlabel("resolution √(H·W) (px)")
        ax.grid(True, which="major", alpha=0.3)
    log_axis(axes[0], gmacs, axis="y")
    axes[0].set_ylabel("GMACs per image (one network evaluation)")
    axes[0].set_title("Compute vs resolution", fontsize=10)
    axes[0].legend(fontsize=7, loc="upper left")
    if memory:
        log_axis(axes[1], (f["peak_mem_bytes"] / MIB / div).to_numpy(float), axis="y")
        axes[1].set_ylabel(f"peak memory above weights ({unit})")
        axes[1].set_title("Peak memory vs resolution", fontsize=10)
        keys = [(h, lab) for lab, (h, has) in handles.items() if has]
        keys += [(Line2D([], [], color="k", ls="-", marker="o"), MEASURED_LABEL),
                 (Line2D([], [], color="k", ls="--", marker="o", markerfacecolor="white"), ESTIMATED_SHORT)]
        axes[1].legend([h for h, _ in keys], [lab for _, lab in keys], fontsize=7, loc="upper left", ncol=2)
    fig.suptitle("Cost vs resolution")
    if not memory:
        return fig, "qdm-bench · MACs: counted, device-independent"
    measured = f[f["mem_measured"].notna()]
    return fig, measured_caption(measured, bool(f["mem_est"].notna().any()), ["MACs: counted, device-independent"])


def plot_cost_vs_res(df: pd.DataFrame, out: str | Path) -> list[Path]:
    """GMACs per image (and peak memory when present) against resolution per model, log-log."""
    fig, caption = _cost_figure(df)
    return _save(fig, out, caption)
