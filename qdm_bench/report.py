"""Reports from results files alone (no re-measurement): paper-style tables, plots and an index page.

Tables are pandas frames of display strings, rendered with tabulate as Markdown (``github``) or LaTeX
(``latex_booktabs``) by :func:`render`; they follow the QDM paper's layouts (spec ``qdm.md`` §10):

* :func:`figure5_table` — Figure 5's comparison at one resolution (params, GMACs, peak memory, latency, img/s);
* :func:`table5` — configurations (parameters in both conventions, GMACs per resolution);
* :func:`threshold_table` — Tables 3/6 (threshold ablation, the full-mask row first);
* :func:`window_patch_table` — Table 4 (upstream patch × downstream window);
* :func:`failed_table` — cells that ended in ``oom`` / ``error`` / ``skipped``, with their message.

Plots are matplotlib figures (Agg, no pyplot state) saved as PNG and PDF, each with a caption line (devices and
dates of the rows): :func:`plot_figure5`, :func:`plot_cost_vs_res`, :func:`plot_threshold` and
:func:`plot_quadtree_overlay`.  :func:`write_report` writes everything the data supports and an ``index.md``.

Estimated peak memory (a meta-device trace, ``mem_estimated``) is never shown in a measured column or as a plain
bar: it has its own column, marked ``(est.)``, and hatched bars.
"""
from __future__ import annotations

import dataclasses

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from tabulate import tabulate

from qdm_bench.results import COLUMNS, read_results

__all__ = [
    "FORMATS", "QUALITY", "MAC_CONVENTION", "MEMORY_NOTE", "PAPER_TABLE5_PARAMS_M", "load_rows", "render",
    "figure5_table", "table5", "threshold_table", "window_patch_table", "failed_table", "plot_figure5",
    "plot_cost_vs_res", "plot_threshold", "plot_quadtree_overlay", "write_report",
]

FORMATS = {"md": "github", "tex": "latex_booktabs"}
MIB = 2**20
NUMERIC = [
    "params", "params_paper", "height", "width", "batch", "threshold", "density", "window", "patch", "patch_density",
    "window_density", "active_windows", "total_windows", "macs", "attention_macs", "macs_per_sr", "num_steps",
    "peak_mem_bytes", "peak_reserved_bytes", "latency_median_ms", "latency_p10_ms", "latency_p90_ms", "latency_n",
    "throughput_img_s", "windows_per_s", "threads", "elapsed_s", "bops", "ops", "params_deploy", "tile",
]
QUALITY = {"psnr": ("PSNR-Y (dB)", "{:.2f}"), "ssim": ("SSIM-Y", "{:.4f}"), "lpips": ("LPIPS", "{:.4f}"),
           "clipiqa": ("CLIPIQA", "{:.4f}"), "musiq": ("MUSIQ", "{:.2f}"), "psnr_rgb": ("PSNR-RGB (dB)", "{:.2f}"),
           "bicubic_psnr": ("bicubic PSNR-Y", "{:.2f}"), "bicubic_ssim": ("bicubic SSIM-Y", "{:.4f}")}
EXTRA_KEYS = ("image", "image_size", "scale", "ablation", "sampler", "ensemble", "posterior",
              "tile")  # columns that identify a cell
IMAGE_KEYS = ("image_size", "scale", "ablation", "sampler", "ensemble",
              "tile")  # sweep-block keys besides the model's settings
CONFIG = ["model", "height", "width", "batch", "dtype", "device", "device_name", "compile", "window", "patch",
          "threshold", "density"]
SHOWN = {"res": "res", "batch": "batch", "dtype": "dtype", "device_name": "device", "compile": "compile",
         "window": "window", "patch": "patch", "ablation": "ablation", "sampler": "sampler", "tile": "tile",
         "posterior": "posterior", "ensemble": "mean of"}
FAILED = ("oom", "error", "skipped")
PAPER_TABLE5_PARAMS_M = {"qdm-s": 50.87, "qdm-b": 199.06, "qdm-l": 691.94}
MAC_CONVENTION = ("MACs count the multiply-accumulates of convolutions and matmuls, attention products (QKᵀ, AV) "
                  "included; norms, softmax and element-wise ops are excluded. FLOPs = 2·MACs. GMACs are per "
                  "network evaluation; TMACs/SR are for a whole super-resolution (num_steps evaluations).")
MEMORY_NOTE = ("Peak memory is the working memory above resident weights and inputs. Estimated values (est.) come "
               "from a meta-device trace of live tensor bytes and are a lower bound (no allocator rounding, "
               "workspaces or CUDA context); they are kept apart from measured values.")


# ------------------------------------------------------------------------------------------------------ loading

def load_rows(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """All rows of the results files (every schema column, plus extras), the last row kept per repeated cell key."""
    df = pd.DataFrame(read_results(paths))
    df = df.reindex(columns=COLUMNS + [c for c in df.columns if c not in COLUMNS])
    df = df[df["key"].isna() | ~df.duplicated("key", keep="last")].reset_index(drop=True)
    for col in [c for c in (*NUMERIC, "image_size", "scale", *QUALITY) if c in df.columns]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    """Finished rows (status ok) that name a model."""
    return df[df["status"].eq("ok") & df["model"].notna()]


def _keys(df: pd.DataFrame) -> list[str]:
    """Columns that identify a cell configuration, with the optional extras present in ``df``."""
    return CONFIG + [c for c in EXTRA_KEYS if c in df.columns]


def _merge_cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: ok rows combined, each column's last non-null value (e.g. memory and speed runs)."""
    ok = _ok(df).copy()
    ok["mem_measured"] = ok["peak_mem_bytes"].where(~ok["mem_estimated"].eq(True))
    ok["mem_est"] = ok["peak_mem_bytes"].where(ok["mem_estimated"].eq(True))
    if ok.empty:
        return ok
    return ok.groupby(_keys(ok), dropna=False, sort=False).last().reset_index()


# --------------------------------------------------------------------------------------------------- formatting

def _fmt(value: Any, spec: str = "{:,.2f}", scale: float = 1.0) -> str:
    """A number formatted after scaling; empty for a missing value."""
    return "" if pd.isna(value) else spec.format(value / scale)


def _res(h: Any, w: Any) -> str:
    """``1024x1024`` style resolution label."""
    return "" if pd.isna(h) or pd.isna(w) else f"{int(h)}x{int(w)}"


def _res_pair(res: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from 1024 or (512, 768)."""
    return (int(res), int(res)) if isinstance(res, (int, np.integer)) else (int(res[0]), int(res[1]))


def _threshold_label(row: pd.Series) -> str:
    """``full mask``, a threshold (``0.15``) or a random window density (``d=0.50``)."""
    if pd.notna(row["threshold"]):
        s = row["threshold"]
        return f"{s:.2f}" if round(s, 2) == s else f"{s:g}"
    if pd.notna(row["density"]):
        return f"d={row['density']:.2f}"
    return "full mask"


def _count(value: Any) -> str:
    """An integer count, or one decimal when it is a mean over images."""
    if pd.isna(value):
        return ""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _windows(row: pd.Series) -> str:
    """``active / total`` windows."""
    if pd.isna(row["active_windows"]):
        return ""
    return f"{_count(row['active_windows'])} / {_count(row['total_windows'])}"


def _latency(row: pd.Series) -> str:
    """Median latency with its [p10–p90] range."""
    if pd.isna(row["latency_median_ms"]):
        return ""
    spread = ""
    if pd.notna(row["latency_p10_ms"]) and pd.notna(row["latency_p90_ms"]):
        spread = f" [{row['latency_p10_ms']:,.1f}–{row['latency_p90_ms']:,.1f}]"
    return f"{row['latency_median_ms']:,.1f}{spread}"


def _steps_label(frame: pd.DataFrame) -> str:
    """Header of the per-SR MACs column, naming the step count when it is unique."""
    steps = frame["num_steps"].dropna().unique()
    return f"TMACs/SR ({int(steps[0])} steps)" if len(steps) == 1 else "TMACs/SR"


def _varying(frame: pd.DataFrame, cols: Sequence[str], within: str | None = "model") -> list[str]:
    """Columns of ``cols`` that take more than one value (within a model when ``within`` is given)."""
    cols = [c for c in cols if c in frame.columns]
    if frame.empty:
        return []
    if within is None:
        return [c for c in cols if frame[c].nunique(dropna=False) > 1]
    counts = frame.groupby(within, dropna=False)[cols].nunique(dropna=False)
    return [c for c in cols if (counts[c] > 1).any()]


def _shown_keys(frame: pd.DataFrame, cols: Sequence[str], within: str | None = "model") -> dict[str, pd.Series]:
    """Display columns for the configuration keys that vary (``res`` joins height and width)."""
    if "height" in frame.columns:
        frame = frame.assign(res=[_res(h, w) for h, w in zip(frame["height"], frame["width"])])
    out = {}
    for c in _varying(frame, cols, within):
        out[SHOWN.get(c, c)] = frame[c].map(lambda v: "" if pd.isna(v) else (f"{v:g}" if isinstance(v, float)
                                                                                else str(v)))
    return out


def _drop_empty(table: pd.DataFrame, keep: Sequence[str] = ("model",)) -> pd.DataFrame:
    """The table without columns that no row fills (those in ``keep`` stay)."""
    return table[[c for c in table.columns if c in keep or table[c].astype(str).ne("").any()]]


def _label(frame: pd.DataFrame, cols: Sequence[str]) -> pd.Series:
    """Plot labels: the model plus the configuration keys of ``cols`` that vary within a model."""
    extra = _shown_keys(frame, cols)
    labels = frame["model"].astype(str)
    for name, values in extra.items():
        labels = labels + np.where(values.eq(""), "", f" {name} " + values)
    return labels.reset_index(drop=True)


def render(table: pd.DataFrame, fmt: str = "github") -> str:
    """A display table as text: ``github`` (Markdown), ``latex_booktabs`` (LaTeX) or any tabulate format."""
    return tabulate(table, headers="keys", tablefmt=fmt, showindex=False, disable_numparse=True)


# ------------------------------------------------------------------------------------------------------- tables

def _dense(df: pd.DataFrame) -> pd.DataFrame:
    """Merged unmasked (full-mask) rows, one per configuration; the image a sweep named does not matter for them."""
    m = _merge_cells(df)
    if m.empty:
        return m
    m = m[m["threshold"].isna() & m["density"].isna()]
    keys = [k for k in _keys(m) if k not in ("image", "image_size", "scale")]
    return m.groupby(keys, dropna=False, sort=False).last().reset_index()


def _figure5_frame(df: pd.DataFrame, res: int | tuple[int, int]) -> pd.DataFrame:
    """Merged unmasked (dense) rows at one resolution, one per configuration, with a ``label`` column."""
    h, w = _res_pair(res)
    d = _dense(df)
    if d.empty:
        return d
    sel = d[d["height"].eq(h) & d["width"].eq(w)].reset_index(drop=True)
    return sel.assign(label=_label(sel, ["batch", "dtype", "device_name", "compile", "window", "patch", "ablation"]))


def _col(f: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of ``f``, or an all-missing one (results files written before it existed)."""
    return f[name] if name in f.columns else pd.Series([None] * len(f), index=f.index, dtype=object)


def figure5_table(df: pd.DataFrame, res: int | tuple[int, int]) -> pd.DataFrame:
    """Figure 5 at one resolution: per model params, GMACs, peak MiB (measured / estimated apart), latency, img/s."""
    f = _figure5_frame(df, res)
    if f.empty:
        return pd.DataFrame()
    keys = _shown_keys(f, ["batch", "dtype", "compile", "window", "patch", "ablation"])
    table = pd.DataFrame({
        "model": f["model"], **keys,
        "params (M)": f["params"].map(lambda v: _fmt(v, scale=1e6)),
        "deployed params (M)": _col(f, "params_deploy").map(lambda v: _fmt(v, scale=1e6)),
        "GMACs": f["macs"].map(lambda v: _fmt(v, "{:,.1f}", 1e9)),
        "GBOPs": _col(f, "bops").map(lambda v: _fmt(v, "{:,.1f}", 1e9)),
        "GOPs (FP MACs + BOPs/64)": _col(f, "ops").map(lambda v: _fmt(v, "{:,.2f}", 1e9)),
        "NFE": _col(f, "num_steps").map(lambda v: _fmt(v, "{:.0f}")),
        "peak MiB (measured)": f["mem_measured"].map(lambda v: _fmt(v, "{:,.0f}", MIB)),
        "peak MiB (estimated)": f["mem_est"].map(lambda v: "" if pd.isna(v) else _fmt(v, "{:,.0f}", MIB) + " (est.)"),
        "median ms [p10–p90]": f.apply(_latency, axis=1),
        "img/s": f["throughput_img_s"].map(lambda v: _fmt(v, "{:,.2f}")),
        "device": f["device_name"].fillna(f["device"]).fillna(""),
    })
    return _drop_empty(table)


def table5(df: pd.DataFrame) -> pd.DataFrame:
    """Configurations: params (learnable and paper convention, with the paper's Table 5), GMACs/img per resolution."""
    m = _merge_cells(df)
    if m.empty or (m["params"].isna().all() and m["macs"].isna().all()):
        return pd.DataFrame()
    group = ["model", "window", "patch"] + [c for c in ("ablation",) if c in m.columns]
    conf = m.groupby(group, dropna=False, sort=False)[["params", "params_paper"]].last().reset_index()
    dense = _dense(df)
    dense = dense[dense["macs"].notna()]
    dense = dense.assign(res=[f"GMACs/img @ {_res(h, w)}" for h, w in zip(dense["height"], dense["width"])],
                         gmacs=dense["macs"] / dense["batch"].fillna(1) / 1e9)
    order = dense.assign(area=dense["height"] * dense["width"]).sort_values("area", kind="stable")["res"].unique()
    if not dense.empty:
        pivot = dense.groupby(group + ["res"], dropna=False, sort=False)["gmacs"].last().unstack("res")
        conf = conf.merge(pivot.reset_index(), on=group, how="left")
    default = conf["ablation"].isna() if "ablation" in conf.columns else pd.Series(True, index=conf.index)
    table = pd.DataFrame({"model": conf["model"], **_shown_keys(conf, group[1:]),
                          "params (M)": conf["params"].map(lambda v: _fmt(v, scale=1e6)),
                          "params (M, paper convention)": conf["params_paper"].map(lambda v: _fmt(v, scale=1e6)),
                          "paper Table 5 (M)": conf["model"].map(PAPER_TABLE5_PARAMS_M).where(default).map(_fmt)})
    for col in order:
        table[col] = conf[col].map(lambda v: _fmt(v, "{:,.1f}"))
    return _drop_empty(table)


def _mean_over_images(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Numeric columns averaged over the ``image`` column (when present) per key, others last; ``images`` counts."""
    if "image" not in frame.columns or frame["image"].isna().all():
        return frame
    rest = [c for c in frame.columns if c not in keys and c != "image"]
    how = {c: "mean" if pd.api.types.is_numeric_dtype(frame[c]) else "last" for c in rest}
    grouped = frame.groupby(keys, dropna=False, sort=False)
    return grouped.agg(how).join(grouped["image"].nunique().rename("images")).reset_index()


def _mask_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Merged ok rows of mask-using models (QDM) whose mask came from a threshold or the full mask."""
    m = _merge_cells(df)
    if m.empty:
        return m
    return m[m["patch_density"].notna() & m["density"].isna()]


def _mask_columns(f: pd.DataFrame) -> dict[str, Any]:
    """Cost, speed and quality columns shared by the threshold and window/patch tables."""
    cols: dict[str, Any] = {
        "patch density (%)": f["patch_density"].map(lambda v: _fmt(v, "{:.2f}", 0.01)),
        "active windows / total": f.apply(_windows, axis=1) if len(f) else [],
        "GMACs": f["macs"].map(lambda v: _fmt(v, "{:,.1f}", 1e9)),
        _steps_label(f): f["macs_per_sr"].map(lambda v: _fmt(v, "{:,.2f}", 1e12)),
        "median ms [p10–p90]": f.apply(_latency, axis=1) if len(f) else [],
    }
    for q, (name, spec) in QUALITY.items():
        if q in f.columns:
            cols[name] = f[q].map(lambda v, spec=spec: _fmt(v, spec))
    if "images" in f.columns:
        cols["images"] = f["images"].map(_count)
    return cols


def _model_res(f: pd.DataFrame) -> dict[str, Any]:
    """The ``model`` and ``res`` display columns."""
    return {"model": f["model"], "res": [_res(h, w) for h, w in zip(f["height"], f["width"])]}


def _threshold_frame(df: pd.DataFrame, per_image: bool = False) -> pd.DataFrame:
    """Threshold sweeps with their full-mask rows, full mask first then ascending threshold, per sweep block."""
    f = _mask_frame(df)
    if f.empty or f["threshold"].isna().all():
        return pd.DataFrame()
    block = ["model", "height", "width", "batch", "dtype", "device_name", "window", "patch"]
    block += [c for c in IMAGE_KEYS if c in f.columns]
    swept = f.groupby(block, dropna=False, sort=False)["threshold"].transform(lambda s: s.notna().any())
    f = f[swept.astype(bool)]
    posterior = ["posterior"] if "posterior" in f.columns else []  # within a block: full mask has none
    if not per_image:
        f = _mean_over_images(f, block + ["threshold"] + posterior)
    f = f.assign(block=f.groupby(block, dropna=False, sort=False).ngroup(), swept=f["threshold"].notna())
    sort = ["block", "swept", "threshold"] + posterior + (["image"] if per_image and "image" in f.columns else [])
    return f.sort_values(sort, kind="stable", na_position="first").reset_index(drop=True)


def threshold_table(df: pd.DataFrame, per_image: bool = False) -> pd.DataFrame:
    """Tables 3/6: per threshold (full mask first) density, windows, GMACs, TMACs/SR, latency and quality.

    With an ``image`` column the rows are averaged over images; ``per_image=True`` keeps one row per image.
    """
    f = _threshold_frame(df, per_image)
    if f.empty:
        return pd.DataFrame()
    keys = _shown_keys(f, ["batch", "dtype", "device_name", "window", "patch", *IMAGE_KEYS], None)
    image = {"image": f["image"].fillna("")} if per_image and "image" in f.columns else {}
    posterior = {"posterior": f["posterior"].fillna("")} if "posterior" in f.columns else {}
    table = pd.DataFrame({**_model_res(f), **keys, **image, "threshold": f.apply(_threshold_label, axis=1),
                          **posterior, **_mask_columns(f)})
    return _drop_empty(table, keep=("model", "res", "threshold"))


def window_patch_table(df: pd.DataFrame) -> pd.DataFrame:
    """Table 4: per (upstream patch, downstream window) params, GMACs, TMACs/SR, density, windows, latency."""
    f = _mask_frame(df)
    if f.empty:
        return pd.DataFrame()
    block = ["model", "height", "width", "batch", "dtype", "device_name", "threshold"]
    block += [c for c in ("image_size", "scale") if c in f.columns]
    combos = f.groupby(block, dropna=False, sort=False)[["patch", "window"]].transform(
        lambda s: s.nunique(dropna=False))
    f = f[(combos["patch"] > 1) | (combos["window"] > 1)]
    if f.empty:
        return pd.DataFrame()
    f = _mean_over_images(f, block + ["patch", "window"] + [c for c in ("ablation",) if c in f.columns])
    f = f.assign(block=f.groupby(block, dropna=False, sort=False).ngroup())
    f = f.sort_values(["block", "patch", "window"], kind="stable").reset_index(drop=True)
    keys = _shown_keys(f, ["batch", "dtype", "device_name", "threshold", "image_size", "scale"], None)
    if "threshold" in keys:
        keys["threshold"] = f.apply(_threshold_label, axis=1)
    extra = {"ablation": f["ablation"].fillna("")} if "ablation" in f.columns else {}
    table = pd.DataFrame({**_model_res(f), **keys, **extra, "patch": f["patch"].map(lambda v: _fmt(v, "{:.0f}")),
                          "window": f["window"].map(lambda v: _fmt(v, "{:.0f}")),
                          "params (M)": f["params"].map(lambda v: _fmt(v, scale=1e6)), **_mask_columns(f)})
    return _drop_empty(table, keep=("model", "res", "patch", "window"))


def failed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Cells without a result (status oom, error or skipped) with their message."""
    bad = df[df["status"].isin(FAILED)].reset_index(drop=True)
    if bad.empty:
        return pd.DataFrame()
    return pd.DataFrame({
        "model": bad["model"].fillna(""), "res": [_res(h, w) for h, w in zip(bad["height"], bad["width"])],
        "batch": bad["batch"].map(lambda v: _fmt(v, "{:.0f}")), "dtype": bad["dtype"].fillna(""),
        "device": bad["device"].fillna(""),
        "mask": bad.apply(_threshold_label, axis=1).where(bad["threshold"].notna() | bad["density"].notna(), ""),
        "status": bad["status"], "message": bad["message"].fillna("").map(_one_line),
    })


def _one_line(text: str, limit: int = 300) -> str:
    """Whitespace collapsed to single spaces, cut at ``limit`` characters."""
    text = re.sub(r"\s+", " ", str(text)).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


# -------------------------------------------------------------------------------------------------------- plots

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
    f = f.assign(label=_label(f, ["batch", "dtype", "compile", "window", "patch", "ablation"]),
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


def _image_array(image: Any) -> np.ndarray:
    """A (3, H, W) / (1, 3, H, W) / (1, H, W) tensor in [0, 1] as an (H, W, 3) array."""
    import torch

    img = torch.as_tensor(image).detach().float().cpu()
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"image must be a (3, H, W) tensor in [0, 1], got shape {tuple(img.shape)}")
    return img.expand(3, -1, -1).clamp(0, 1).permute(1, 2, 0).numpy()


def _draw_mask(ax: Any, mask: Any, h: int, w: int) -> str:
    """Tint and outline the active cells of a mask grid over an h×w image; returns a caption fragment."""
    import torch

    m = torch.as_tensor(mask).detach().cpu().bool()
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2:
        raise ValueError(f"mask must be an (H', W') grid, got shape {tuple(m.shape)}")
    grid = m.numpy()
    ch, cw = h / grid.shape[0], w / grid.shape[1]
    tint = np.zeros(grid.shape + (4,))
    tint[grid] = (1.0, 0.15, 0.1, 0.35)
    ax.imshow(tint, extent=(0, w, h, 0), interpolation="nearest")
    ys, xs = np.nonzero(grid)
    ax.add_collection(PatchCollection([Rectangle((x * cw, y * ch), cw, ch) for y, x in zip(ys, xs)],
                                      facecolor="none", edgecolor="red", linewidth=0.6, zorder=3))
    return f"active cells {grid.sum()} / {grid.size} ({100 * grid.mean():.1f} %), cell {cw:g}×{ch:g} px"


def _draw_leaves(ax: Any, leaves: Sequence[Any], tint: bool) -> str:
    """Outline quadtree leaves (active ones in red, tinted when no mask is drawn); returns a caption fragment."""
    active = [leaf for leaf in leaves if leaf.active]
    inactive = [leaf for leaf in leaves if not leaf.active]
    ax.add_collection(PatchCollection([Rectangle((lf.x, lf.y), lf.w, lf.h) for lf in inactive], facecolor="none",
                                      edgecolor="yellow", linewidth=0.5))
    ax.add_collection(PatchCollection([Rectangle((lf.x, lf.y), lf.w, lf.h) for lf in active],
                                      facecolor=(1.0, 0.15, 0.1, 0.35) if tint else "none", edgecolor="red",
                                      linewidth=0.5))
    return f"quadtree leaves {len(leaves)} ({len(active)} active)"


def plot_quadtree_overlay(image: Any, mask: Any, out: str | Path, title: str = "",
                          leaves: Sequence[Any] | None = None) -> list[Path]:
    """The image with active mask cells tinted and outlined, and/or quadtree leaf rectangles (Figure 3 style).

    ``mask`` is an (H', W') bool grid over the image, a list of :class:`qdm.quadtree.QuadLeaf` (then drawn as
    leaves), or None when ``leaves`` are given; leaves are in the image's pixel coordinates.
    """
    if mask is not None and isinstance(mask, (list, tuple)):
        mask, leaves = None, list(mask) + list(leaves or [])
    if mask is None and not leaves:
        raise ValueError("give a mask grid or a list of quadtree leaves to draw")
    arr = _image_array(image)
    h, w = arr.shape[:2]
    fig = Figure(figsize=(6.0, 6.0 * h / w + 0.8))
    ax = fig.subplots()
    ax.imshow(arr, extent=(0, w, h, 0), interpolation="nearest")
    parts = [_draw_mask(ax, mask, h, w)] if mask is not None else []
    if leaves:
        parts.append(_draw_leaves(ax, leaves, tint=mask is None))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(title or "Quadtree mask")
    return _save(fig, out, f"{w}×{h} image · " + "; ".join(parts))


# ------------------------------------------------------------------------------------------------------- report

def _slug(res: tuple[int, int]) -> str:
    """File-name resolution: ``1024`` (square) or ``512x768``."""
    return str(res[0]) if res[0] == res[1] else f"{res[0]}x{res[1]}"


def _write_table(table: pd.DataFrame, out_dir: Path, name: str, title: str) -> list[Path]:
    """``name.md`` (Markdown) and ``name.tex`` (LaTeX booktabs) of a display table."""
    md, tex = out_dir / f"{name}.md", out_dir / f"{name}.tex"
    md.write_text(f"# {title}\n\n{render(table, FORMATS['md'])}\n", encoding="utf-8")
    tex.write_text(f"% qdm-bench: {title}\n{render(table, FORMATS['tex'])}\n", encoding="utf-8")
    return [md, tex]


def _unique(df: pd.DataFrame, col: str) -> list[str]:
    """Distinct non-null values of a column, as strings, in order of appearance."""
    return [str(v) for v in df[col].dropna().unique()] if col in df.columns else []


def _provenance(df: pd.DataFrame, paths: Sequence[Path], commands: Sequence[str] | None) -> list[str]:
    """Index lines: results files, devices, software, commits, dates, conventions and commands."""
    ok = _ok(df)
    devices = sorted({f"{d} ({n})" if pd.notna(n) else str(d) for d, n in zip(ok["device"], ok["device_name"])})
    stamps = pd.to_datetime(ok["timestamp"], utc=True, errors="coerce", format="ISO8601").dropna()
    span = sorted({f"{t:%Y-%m-%d %H:%M}" for t in (stamps.min(), stamps.max())}) if len(stamps) else []
    dates = " to ".join(span) + " UTC" if span else "not recorded"
    threads = _unique(ok[ok["device"].eq("cpu")], "threads")
    lines = ["## Provenance", "",
             "* results files: " + ", ".join(f"`{p}`" for p in paths)
             + f" ({len(df)} rows after de-duplication, {len(ok)} ok)",
             f"* devices: {', '.join(devices) or 'not recorded'}",
             f"* torch: {', '.join(_unique(ok, 'torch_version')) or 'not recorded'}; "
             f"CUDA: {', '.join(_unique(ok, 'cuda_version')) or 'none (CPU rows only)'}"
             + (f"; CPU threads: {', '.join(threads)}" if threads else ""),
             f"* git commits: {', '.join(_unique(ok, 'git_commit')) or 'not recorded'}",
             f"* measured: {dates}",
             (f"* report written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from the results files alone "
              "(no re-measurement)"), "",
             "## Conventions", "", f"* {MAC_CONVENTION}", f"* {MEMORY_NOTE}",
             "* Paper figures appear only in columns labelled with the paper as their source.", "",
             "## Commands", ""]
    lines += ["```", *commands, "```"] if commands else ["not recorded"]
    return lines + [""]


def pgs_table(df: pd.DataFrame) -> pd.DataFrame:
    """Patch-adaptive group sampling rows (``qdm-bench pgs --out``): groups, evaluations, NFE, calls, memory, PSNR."""
    if "patch_evals" not in df.columns:
        return pd.DataFrame()
    f = df[df["patch_evals"].notna()].reset_index(drop=True)
    if f.empty:
        return pd.DataFrame()

    def groups(gs: Any) -> str:
        return " / ".join(f"{g['name']} {g['patches']}×{g['n_steps']} (t₀ {g['t_start']})" for g in gs or [])

    def psnr(p: Any, key: str) -> str:
        return _fmt(p.get(key)) if isinstance(p, dict) and p.get(key) is not None else ""

    def uniform(u: Any, key: str, scale: float = 1.0, spec: str = "{:,.1f}") -> str:
        return _fmt(u.get(key), spec, scale) if isinstance(u, dict) and u.get(key) is not None else ""

    table = pd.DataFrame({
        "model": f["model"], "image": f["image"].fillna(""),
        "res": [f"{s[0]}x{s[1]}" if isinstance(s, list) else "" for s in f["image_size"]],
        "patch / overlap": [f"{p:.0f} / {o:.0f}" for p, o in zip(f["patch"], f["overlap"])],
        "groups: M×N": f["groups"].map(groups),
        "patch evals": f["patch_evals"].map(lambda v: _fmt(v, "{:,.0f}")),
        "full-image-eq NFE": f["full_image_eq_nfe"].map(_fmt),
        "pixel-eq NFE": f["pixel_eq_nfe"].map(_fmt),
        "model calls": f["model_calls"].map(lambda v: _fmt(v, "{:,.0f}")),
        "uniform NFE": f["uniform_nfe"].map(lambda v: _fmt(v, "{:.0f}")),
        "peak MiB": f["peak_memory_bytes"].map(lambda v: _fmt(v, "{:,.1f}", MIB)),
        "uniform peak MiB": f["uniform"].map(lambda u: uniform(u, "peak_memory_bytes", MIB)),
        "time s": f["wall_time_s"].map(_fmt),
        "uniform time s": f["uniform"].map(lambda u: uniform(u, "wall_time_s", spec="{:,.2f}")),
        "PSNR-Y PGS": f["psnr_y"].map(lambda p: psnr(p, "pgs")),
        "PSNR-Y uniform": f["psnr_y"].map(lambda p: psnr(p, "uniform")),
        "PSNR-Y bicubic": f["psnr_y"].map(lambda p: psnr(p, "bicubic")),
        "device": f["device"].fillna(""),
    })
    return _drop_empty(table, keep=("model", "patch evals", "full-image-eq NFE"))


def _tables(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(file name, title, display table) for every table the data supports."""
    out = []
    dense = _dense(df)
    pairs = dense[["height", "width"]].dropna().drop_duplicates() if not dense.empty else pd.DataFrame()
    for h, w in sorted(map(tuple, pairs.astype(int).to_numpy()), key=lambda p: p[0] * p[1]):
        out.append((f"figure5_{_slug((h, w))}", f"Figure 5 comparison at {h}x{w}", figure5_table(df, (h, w))))
    out.append(("table5", "Configurations (Table 5 layout)", table5(df)))
    out.append(("threshold", "Threshold ablation (Tables 3/6 layout)", threshold_table(df)))
    if "image" in df.columns and df["image"].nunique() > 1:
        out.append(("threshold_per_image", "Threshold ablation per image", threshold_table(df, per_image=True)))
    out.append(("window_patch", "Upstream patch and downstream window (Table 4 layout)", window_patch_table(df)))
    out.append(("pgs", "Patch-adaptive group sampling vs uniform sampling (PatchScaler-style; policy values assumed)",
                pgs_table(df)))
    return [(n, t, tab) for n, t, tab in out if not tab.empty]


def _plots(df: pd.DataFrame, out_dir: Path) -> list[tuple[str, list[Path]]]:
    """(title, [png, pdf]) for every plot the data supports."""
    dense = _dense(df)
    if dense.empty:
        return []
    out = []
    has = dense[dense["peak_mem_bytes"].notna() | dense["latency_median_ms"].notna()]
    pairs = has[["height", "width"]].dropna().drop_duplicates().astype(int).to_numpy()
    for h, w in sorted(map(tuple, pairs), key=lambda p: p[0] * p[1]):
        out.append((f"Peak memory and latency at {h}x{w}",
                    plot_figure5(df, (h, w), out_dir / f"figure5_{_slug((h, w))}")))
    sized = dense[dense["macs"].notna() | dense["peak_mem_bytes"].notna()]
    if sized.groupby("model")["height"].nunique().gt(1).any():
        out.append(("Cost vs resolution", plot_cost_vs_res(df, out_dir / "cost_vs_res")))
    if not _threshold_frame(df).empty:
        out.append(("Quadtree threshold ablation", plot_threshold(df, out_dir / "threshold")))
    return out


def plot_overlays(df: pd.DataFrame, out: Path, max_images: int = 4,
                  target: float = 0.15) -> list[tuple[str, list[Path]]]:
    """Figure-3-style overlays for up to ``max_images`` swept images, at the stored threshold nearest ``target``."""
    import torch

    from qdm.quadtree import quadtree_decompose
    from qdm_bench.cells import Cell, cell_image, cell_lr_image, cell_mask
    from qdm_bench.registry import ModelError, create_model

    if "image" not in df.columns or "threshold" not in df.columns:
        return []
    rows = _ok(df)
    rows = rows[rows["image"].notna() & rows["threshold"].notna()]
    written = []
    for key in list(dict.fromkeys(rows["image"]))[:max_images]:
        sub = rows[rows["image"] == key]
        r = sub.iloc[(sub["threshold"] - target).abs().argmin()]
        optional = {k: int(r[k]) for k in ("image_size", "scale", "window", "patch") if k in r and not pd.isna(r[k])}
        cell = Cell(model=str(r["model"]), height=int(r["height"]), width=int(r["width"]), image=str(key),
                    threshold=float(r["threshold"]), **optional)
        try:  # the mask exactly as the measured cell computed it
            img = cell_image(cell)
            with torch.device("meta"):
                model = create_model(cell.model, **cell.overrides())
            if not hasattr(model, "plan"):
                continue  # a threshold on a model without masks draws nothing
            mask = cell_mask(cell, model, img)[0]
        except (ValueError, FileNotFoundError, ModelError):
            continue  # an image or model no longer available here is simply not drawn
        lr, s, scale = cell_lr_image(cell, img)[0], cell.threshold, cell.scale
        h, w = lr.shape[-2:]
        leaves = None
        if h == w and h & (h - 1) == 0:  # the recursive decomposition needs a power-of-two square
            leaves = [dataclasses.replace(leaf, y=leaf.y * scale, x=leaf.x * scale, h=leaf.h * scale, w=leaf.w * scale)
                      for leaf in quadtree_decompose(lr, s, min_size=max(1, h // 64))]  # LR → HR pixels
        name = "overlay_" + "".join(ch if ch.isalnum() else "_" for ch in str(key))
        title = f"{key}: s = {s:g}, patch density {100 * float(mask.float().mean()):.1f}%"
        written.append((title, plot_quadtree_overlay(img.hr, mask, out / name, title=title, leaves=leaves)))
    return written


def write_report(results_paths: str | Path | Iterable[str | Path], out_dir: str | Path, title: str | None = None,
                 commands: list[str] | None = None) -> Path:
    """Write every supported table (Markdown + LaTeX), plot (PNG + PDF) and an ``index.md``; returns its path."""
    from qdm_bench.sweep import summary_table

    paths = [Path(results_paths)] if isinstance(results_paths, (str, Path)) else [Path(p) for p in results_paths]
    df = load_rows(paths)
    if _ok(df).empty and pgs_table(df).empty:
        raise ValueError(f"no finished rows in {', '.join(map(str, paths))} (no row with status ok and a model); "
                         "see the message column of the results file, fix the cause and re-run the measurement")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title or 'qdm-bench report'}", ""] + _provenance(df, paths, commands)
    for name, heading, table in _tables(df):
        md, tex = _write_table(table, out, name, heading)
        lines += [f"## {heading}", "", render(table), "", f"Files: [{md.name}]({md.name}) · [{tex.name}]({tex.name})",
                  ""]
    for heading, (png, pdf) in _plots(df, out):
        lines += [f"## Plot: {heading}", "", f"![{heading}]({png.name})", "",
                  f"Files: [{png.name}]({png.name}) · [{pdf.name}]({pdf.name})", ""]
    overlays = plot_overlays(df, out)
    if overlays:
        lines += ["## Quadtree masks on sample images (Figure 3 style)", "",
                  "Active cells of the patch-grid mask (tinted) and the recursive quadtree leaves of the LR image at "
                  "that threshold, recomputed from the image keys, sizes and thresholds stored in the rows.", ""]
        for heading, (png, pdf) in overlays:
            lines += [f"![{heading}]({png.name})", "", f"Files: [{png.name}]({png.name}) · [{pdf.name}]({pdf.name})",
                      ""]
    records = [r for r in {r.get("key") or i: r for i, r in enumerate(read_results(paths))}.values()
               if "patch_evals" not in r]  # cell rows as stored (PGS rows have their own table)
    md, tex = out / "cells.md", out / "cells.tex"
    md.write_text("# All cells\n\n" + summary_table(records, tablefmt=FORMATS["md"]) + "\n", encoding="utf-8")
    tex.write_text("% qdm-bench: all cells\n" + summary_table(records, tablefmt=FORMATS["tex"]) + "\n",
                   encoding="utf-8")
    lines += ["## All cells", "", f"Every row of the results files: [{md.name}]({md.name}) · [{tex.name}]({tex.name})",
              ""]
    failed = failed_table(df)
    if not failed.empty:
        lines += ["## Cells without results (oom / error / skipped)", "", render(failed), ""]
    index = out / "index.md"
    index.write_text("\n".join(lines), encoding="utf-8")
    return index
