"""Quality/cost trade-off plots: the quadtree threshold curves and the quality-vs-MACs Pareto plot.

Both take results rows (pandas) and draw with ``matplotlib.figure.Figure`` (Agg, no pyplot state); each ``plot_*``
saves the Figure its ``_*_figure`` builder returns, as PNG and PDF with a caption line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from matplotlib.lines import Line2D

from qdm_bench.report.frames import (
    _keys, _mean_over_images, _merge_cells, _res, _shown_keys, _threshold_frame, _threshold_label,
)
from qdm_bench.report.plot_style import (
    _caption, _save, frame_styles, linear_axis, log_axis, wide,
)

VARIANT_STYLES = ("-", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))  # swept-line styles per variant ("--" is the full mask)
SERIES_KEYS = ["res", "batch", "dtype", "device_name", "window", "patch", "image_size", "scale", "sampler",
               "ensemble", "tile", "metric_convention"]  # configuration keys that tell two series apart


def _series_labels(frame: pd.DataFrame, cols: Sequence[str], always_res: bool = False) -> pd.Series:
    """The model plus the keys of ``cols`` that vary within a model (``128x128``, ``sampler stochastic``)."""
    labels = frame["model"].astype(str).reset_index(drop=True)
    shown = _shown_keys(frame, cols)
    if always_res:
        shown.pop("res", None)
        labels = labels + " " + pd.Series([_res(h, w) for h, w in zip(frame["height"], frame["width"])])
    for name, values in shown.items():
        values = values.reset_index(drop=True)
        labels = labels + np.where(values.eq(""), "", (" " if name == "res" else f" {name} ") + values)
    return labels


# ----------------------------------------------------------------------------------------------- threshold curves

def _variant_column(f: pd.DataFrame) -> str | None:
    """The column that splits a sweep block into several curves (the posterior), when it varies."""
    if "posterior" in f.columns and f.loc[f["swept"], "posterior"].nunique(dropna=True) > 1:
        return "posterior"
    return None


def _threshold_figure(df: pd.DataFrame) -> tuple[Figure, str]:
    """Patch density, GMACs and (when scored) PSNR-Y against the threshold s; the full mask dashed per series.

    A series is a sweep block (its colour and marker); when several posteriors were scored, each has its own
    line style and marker fill; the legend (one, right of the last panel) names series, variants and the full mask.
    """
    f = _threshold_frame(df)
    if f.empty:
        raise ValueError("no threshold sweep among the finished rows; nothing to plot")
    first = f.groupby("block", sort=False).head(1)
    one_res = first[["height", "width"]].drop_duplicates().shape[0] == 1
    names = dict(zip(first["block"], _series_labels(first, SERIES_KEYS, always_res=not one_res)))
    f = f.assign(series=f["block"].map(names))
    styles = frame_styles(f, by="series")
    variant = _variant_column(f)
    variants = list(dict.fromkeys(f.loc[f["swept"], variant].dropna())) if variant else [None]
    panels = [("patch_density", 0.01, "patch density (%)", "Mask density"),
              ("macs", 1e9, "GMACs per evaluation", "Compute")]
    if "psnr" in f.columns and f["psnr"].notna().any():
        panels.append(("psnr", 1.0, "PSNR-Y (dB)", "Quality"))
    fig = Figure(figsize=(4.4 * len(panels) + 2.6, 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for _, g in f.groupby("block", sort=False):
        name = str(g["series"].iloc[0])
        st, swept, full = styles[name], g[g["swept"]], g[~g["swept"]]
        for ax, (col, scale, _, _) in zip(axes, panels):
            for i, v in enumerate(variants):
                c = swept if v is None else swept[swept[variant].eq(v)]
                c = c[c[col].notna()]
                if not c.empty:
                    ax.plot(c["threshold"], c[col] / scale, ls=VARIANT_STYLES[i % len(VARIANT_STYLES)],
                            marker=st.marker, color=st.color, markerfacecolor=st.color if i == 0 else "white",
                            markersize=6, lw=1.5, gid=f"swept {name}" + (f" {v}" if v is not None else ""))
            if not full.empty and pd.notna(full[col].iloc[0]):
                ax.axhline(full[col].iloc[0] / scale, color=st.color, ls="--", lw=1, gid=f"full {name}")
    s_max = float(f["threshold"].max())
    for ax, (_, _, ylabel, title) in zip(axes, panels):
        ax.set_xlabel("quadtree threshold s (LR range units, images in [-1, 1])", fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} vs threshold", fontsize=10)
        linear_axis(ax, "x")
        linear_axis(ax, "y")
        ax.set_xlim(min(0.0, float(f["threshold"].min())) - 0.04 * max(s_max, 0.1), 1.1 * max(s_max, 0.1))
        ax.margins(y=0.08)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylim(0, 105)  # density in percent: the whole range
    handles = [Line2D([], [], color=styles[n].color, marker=styles[n].marker, ls="-", label=n)
               for n in dict.fromkeys(f["series"])]
    if variant:
        handles += [Line2D([], [], color="0.3", marker="o", markerfacecolor="0.3" if i == 0 else "white",
                           ls=VARIANT_STYLES[i % len(VARIANT_STYLES)], label=f"{variant} {v}")
                    for i, v in enumerate(variants)]
    if (~f["swept"]).any():
        handles.append(Line2D([], [], color="0.3", ls="--", lw=1, label="full mask (reference)"))
    axes[-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.03, 1.0), frameon=False)
    fig.suptitle("Quadtree threshold ablation" + (f" at {_res(first['height'].iloc[0], first['width'].iloc[0])}"
                                                   if one_res else ""))
    timed = "latency_median_ms" in f.columns and f["latency_median_ms"].notna().any()
    scored = "psnr" in f.columns and f["psnr"].notna().any()
    return fig, (_caption(f) if timed or scored else
                 "qdm-bench · mask densities and MACs: counted (device-independent)")


def plot_threshold(df: pd.DataFrame, out: str | Path) -> list[Path]:
    """Patch density, GMACs and PSNR-Y (when scored) against the quadtree threshold, the full mask dashed."""
    fig, caption = _threshold_figure(df)
    return _save(fig, out, caption)


# --------------------------------------------------------------------------------------------------- Pareto plot

def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> np.ndarray:
    """Mask of the non-dominated points: no other point has cost ≤ and score ≥ with one of them strict.

    Sorted by cost (then best score first), a point is on the front when its score beats every cheaper point's, or
    equals the best one at the same cost (duplicates of a front point are on the front too).
    """
    c, s = np.asarray(costs, dtype=float), np.asarray(scores, dtype=float)
    on = np.zeros(len(c), dtype=bool)
    best, best_cost = -np.inf, np.nan
    for i in np.lexsort((-s, c)):
        if s[i] > best:
            on[i], best, best_cost = True, s[i], c[i]
        elif s[i] == best and c[i] == best_cost:
            on[i] = True
    return on


def _point_label(row: pd.Series, with_posterior: bool) -> str:
    """``s=0.15``, ``d=0.50`` or ``full`` (and the posterior when several were scored)."""
    t = _threshold_label(row)
    label = "full" if t == "full mask" else t if t.startswith("d=") else f"s={t}"
    if with_posterior and pd.notna(row.get("posterior")):
        label += f" {row['posterior']}"
    return label


def _pareto_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model configuration, threshold / full mask) with PSNR-Y and TMACs per super-resolution.

    ``tmacs_sr`` is ``macs_per_sr`` (else ``macs`` × ``num_steps``) per image; PSNR and cost are averaged over the
    images (column ``images`` counts them); ``series`` names the model configuration, ``point`` the threshold.
    """
    m = _merge_cells(df)
    if m.empty or "psnr" not in m.columns:
        return pd.DataFrame()
    per_sr = m["macs_per_sr"] if "macs_per_sr" in m.columns else pd.Series(np.nan, index=m.index)
    per_sr = per_sr.fillna(m["macs"] * m["num_steps"]) / m["batch"].fillna(1)
    m = m.assign(tmacs_sr=per_sr / 1e12)
    m = m[m["psnr"].notna() & m["tmacs_sr"].notna()]
    if m.empty:
        return pd.DataFrame()
    m = _mean_over_images(m, [k for k in _keys(m) if k != "image"]).reset_index(drop=True)
    m = m.assign(res=[_res(h, w) for h, w in zip(m["height"], m["width"])])
    m = m.assign(series=_series_labels(m, SERIES_KEYS))
    posterior = "posterior" in m.columns and m["posterior"].nunique(dropna=True) > 1
    return m.assign(point=[_point_label(r, posterior) for _, r in m.iterrows()])


OFFSETS = ((5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"), (-5, -3, "right", "top"),
           (0, 7, "center", "bottom"), (0, -7, "center", "top"), (5, 12, "left", "bottom"), (5, -12, "left", "top"),
           (-5, 12, "right", "bottom"), (-5, -12, "right", "top"))  # label positions tried, points from the point


def _label_points(ax: Any, xs: np.ndarray, ys: np.ndarray, texts: Sequence[str]) -> None:
    """Annotate each point with its text at the first nearby offset that overlaps no marker or earlier label.

    The figure is laid out first (as :func:`_save` will lay it out) so that display positions are final; the labels
    take no part in the layout.
    """
    fig = ax.figure
    FigureCanvasAgg(fig)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    pts = ax.transData.transform(np.column_stack([xs, ys]))
    taken = [Bbox.from_extents(px - 4, py - 4, px + 4, py + 4) for px, py in pts]
    for (x, y), text in sorted(zip(zip(xs, ys), texts), key=lambda p: (-p[0][1], p[0][0])):
        for k, (dx, dy, ha, va) in enumerate(OFFSETS):
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va, fontsize=7,
                               color="0.25", annotation_clip=False, gid="point-label")
            note.set_in_layout(False)
            box = note.get_window_extent(renderer)
            free = inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1) and \
                not any(box.overlaps(t) for t in taken)
            if free or k == len(OFFSETS) - 1:
                if not free:  # nowhere free: the first position
                    note.remove()
                    note = ax.annotate(text, (x, y), xytext=OFFSETS[0][:2], textcoords="offset points",
                                       ha=OFFSETS[0][2], va=OFFSETS[0][3], fontsize=7, color="0.25", gid="point-label")
                    note.set_in_layout(False)
                taken.append(note.get_window_extent(renderer))
                break
            note.remove()


def _pareto_figure(df: pd.DataFrame) -> tuple[Figure, str]:
    """PSNR-Y against TMACs per super-resolution, one point per configuration and threshold, the front stepped."""
    f = _pareto_frame(df)
    if f.empty:
        raise ValueError("no finished rows with both PSNR-Y and MACs; nothing to plot")
    styles = frame_styles(f, by="series")
    fig = Figure(figsize=(7.6, 5.2))
    ax = fig.subplots()
    for name, g in f.groupby("series", sort=False):
        st = styles[str(name)]
        ax.plot(g["tmacs_sr"], g["psnr"], ls="none", marker=st.marker, color=st.color, markersize=7,
                markeredgecolor="white", label=str(name), gid="points")
    on = pareto_front(f["tmacs_sr"], f["psnr"])
    front = f[on].sort_values(["tmacs_sr", "psnr"], ascending=[True, False])
    ax.step(front["tmacs_sr"], front["psnr"], where="post", color="0.2", lw=1.2, ls="-", zorder=1,
            label="Pareto front (higher PSNR, lower cost)", gid="pareto-front")
    cost = f["tmacs_sr"].to_numpy(float)
    if wide(cost):
        log_axis(ax, cost, axis="x")
    else:
        linear_axis(ax, "x")
        pad = 0.08 * (cost.max() - cost.min()) or 0.1 * cost.max()
        ax.set_xlim(max(0.0, cost.min() - pad), cost.max() + 2 * pad)
    linear_axis(ax, "y")
    ax.margins(y=0.12)
    ax.grid(True, alpha=0.3)
    steps = f["num_steps"].dropna().unique() if "num_steps" in f.columns else []
    ax.set_xlabel("TMACs per super-resolution" + (f" ({int(steps[0])} steps)" if len(steps) == 1 else ""))
    ax.set_ylabel("PSNR-Y (dB)" + (f", mean of {int(f['images'].max())} images" if "images" in f.columns
                                   and f["images"].notna().any() else ""))
    ax.set_title("Quality vs compute", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    fig.suptitle("Quality vs MACs (Pareto front)")
    _label_points(ax, f["tmacs_sr"].to_numpy(float), f["psnr"].to_numpy(float), list(f["point"]))
    return fig, _caption(f)


def plot_pareto(df: pd.DataFrame, out: str | Path) -> list[Path]:
    """PSNR-Y against TMACs per super-resolution with the Pareto front; returns the PNG and PDF paths."""
    fig, caption = _pareto_figure(df)
    return _save(fig, out, caption)

