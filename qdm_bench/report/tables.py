"""Paper-style display tables (Figure 5, Tables 3-6, failed cells, PGS) and their Markdown/LaTeX rendering."""
from __future__ import annotations

import re
from typing import Any, Sequence

import pandas as pd
from tabulate import tabulate

from qdm_bench.report.frames import (
    FAILED, IMAGE_KEYS, MIB, PAPER_TABLE5_PARAMS_M, QUALITY, _col, _count, _default_configs, _dense, _drop_empty,
    _figure5_frame, _fmt, _mask_frame, _mean_over_images, _merge_cells, _res, _res_pair, _shown_keys, _steps_label,
    _threshold_frame, _threshold_label,
)
from qdm_bench.report.latex import render_latex, render_markdown


ESTIMATE = ("† estimated: a meta-device trace of live tensor bytes, a lower bound (no allocator slack, "
            "workspaces or CUDA context); never mixed with measured values.")


def render(table: pd.DataFrame, fmt: str = "github", label: str = "tab:qdm-bench") -> str:
    """A display table as text: ``github`` (Markdown with its notes), ``latex`` (a captioned booktabs float) or
    any other tabulate format (plain cells)."""
    if fmt == "github":
        return render_markdown(table)
    if fmt in ("latex", "latex_booktabs"):
        return render_latex(table, label)
    return tabulate(table, headers="keys", tablefmt=fmt, showindex=False, disable_numparse=True)


def _with(table: pd.DataFrame, caption: str, notes: Sequence[str] = ()) -> pd.DataFrame:
    """``table`` with its caption and footnote lines attached (``attrs``)."""
    table.attrs["caption"] = caption
    table.attrs["notes"] = [n for n in notes if n]
    return table


def _latency_columns(f: pd.DataFrame) -> dict[str, Any]:
    """Median, p10 and p90 latency in their own numeric columns."""
    return {"median latency (ms)": f["latency_median_ms"].map(lambda v: _fmt(v, "{:,.1f}")),
            "p10 (ms)": f["latency_p10_ms"].map(lambda v: _fmt(v, "{:,.1f}")),
            "p90 (ms)": f["latency_p90_ms"].map(lambda v: _fmt(v, "{:,.1f}"))}


def _measured_on(f: pd.DataFrame, measured: pd.Series) -> str:
    """``Measured on DEVICE (N CPU threads).`` for the rows with a measured value (empty when none was)."""
    g = f[measured.to_numpy(dtype=bool)]
    names = []
    for (dev, name), rows in g.groupby([g["device"].fillna(""), g["device_name"].fillna(g["device"])], sort=False):
        threads = rows["threads"].dropna().unique() if dev == "cpu" else []
        n = ", ".join(f"{int(t)}" for t in sorted(threads))
        names.append(f"{name} ({n} CPU thread{'s' if n != '1' else ''})" if n else str(name))
    return f" Measured on {'; '.join(names)}." if names else ""


FAMILY_ORDER = ("qdm", "dit", "unet", "swin-unet")  # Figure 5's order; other families follow in order of appearance


def _paper_order(f: pd.DataFrame) -> pd.DataFrame:
    """Rows in Figure 5's order: QDM, DiT, U-Net, Swin-U-Net, then the others; by parameters within a family."""
    family = f["family"] if "family" in f.columns else f["model"].str.split("-").str[0]
    rank = family.map(lambda v: FAMILY_ORDER.index(v) if v in FAMILY_ORDER else len(FAMILY_ORDER))
    first = family.map({v: i for i, v in enumerate(dict.fromkeys(family))})
    return f.assign(_r=rank, _f=first, _p=f["params"]).sort_values(["_r", "_f", "_p"], kind="stable").drop(
        columns=["_r", "_f", "_p"]).reset_index(drop=True)


def figure5_table(df: pd.DataFrame, res: int | tuple[int, int]) -> pd.DataFrame:
    """Figure 5 at one resolution: per model params, GMACs, peak MiB (measured / estimated apart), latency, img/s."""
    f = _figure5_frame(df, res)
    if f.empty:
        return pd.DataFrame()
    f = _paper_order(f)
    keys = _shown_keys(f, ["batch", "dtype", "device_name", "compile"])
    table = pd.DataFrame({
        "model": f["model"], **keys,
        "params (M)": f["params"].map(lambda v: _fmt(v, scale=1e6)),
        "deployed params (M)": _col(f, "params_deploy").map(lambda v: _fmt(v, scale=1e6)),
        "GMACs": f["macs"].map(lambda v: _fmt(v, "{:,.1f}", 1e9)),
        "GBOPs": _col(f, "bops").map(lambda v: _fmt(v, "{:,.1f}", 1e9)),
        "GOPs": _col(f, "ops").map(lambda v: _fmt(v, "{:,.2f}", 1e9)),
        "NFE": _col(f, "num_steps").map(lambda v: _fmt(v, "{:.0f}")),
        "peak memory (MiB)": f["mem_measured"].map(lambda v: _fmt(v, "{:,.0f}", MIB)),
        "peak memory† (MiB)": f["mem_est"].map(lambda v: _fmt(v, "{:,.0f}", MIB)),
        **_latency_columns(f),
        "throughput (img/s)": f["throughput_img_s"].map(lambda v: _fmt(v, "{:,.2f}")),
    })
    table = _drop_empty(table)
    h, w = _res_pair(res)
    batch = f["batch"].dropna().unique()
    measured = f["mem_measured"].notna() | f["latency_median_ms"].notna()
    caption = (f"Cost of each model at {h}x{w}" + (f", batch {int(batch[0])}" if len(batch) == 1 else "")
               + ": parameters, MACs of one network evaluation, NFE (evaluations per super-resolution), peak "
               "working memory above the weights, and forward latency (median, 10th and 90th percentile)."
               + _measured_on(f, measured))
    notes = [ESTIMATE] if "peak memory† (MiB)" in table.columns else []
    if "GOPs" in table.columns:
        notes.append("GOPs = floating-point MACs + BOPs/64 (the binarised-network convention).")
    return _with(table, caption, notes)


def table5(df: pd.DataFrame) -> pd.DataFrame:
    """Configurations: params (learnable and paper convention, with the paper's Table 5), GMACs/img per resolution.

    Only the models' default configurations; window and patch ablations are Table 4 (:func:`window_patch_table`).
    """
    df = _default_configs(df)
    m = _merge_cells(df)
    if m.empty or (m["params"].isna().all() and m["macs"].isna().all()):
        return pd.DataFrame()
    group = ["model", "window", "patch"]
    cols = ["params", "params_paper"] + (["family"] if "family" in m.columns else [])
    conf = _paper_order(m.groupby(group, dropna=False, sort=False)[cols].last().reset_index())
    dense = _dense(df)
    dense = dense[dense["macs"].notna()]
    dense = dense.assign(res=[f"GMACs @ {_res(h, w)}" for h, w in zip(dense["height"], dense["width"])],
                         gmacs=dense["macs"] / dense["batch"].fillna(1) / 1e9)
    order = dense.assign(area=dense["height"] * dense["width"]).sort_values("area", kind="stable")["res"].unique()
    if not dense.empty:
        pivot = dense.groupby(group + ["res"], dropna=False, sort=False)["gmacs"].last().unstack("res")
        conf = conf.merge(pivot.reset_index(), on=group, how="left")
    table = pd.DataFrame({"model": conf["model"], **_shown_keys(conf, group[1:], None),
                          "params (M)": conf["params"].map(lambda v: _fmt(v, scale=1e6)),
                          "params, paper convention (M)": conf["params_paper"].map(lambda v: _fmt(v, scale=1e6)),
                          "paper Table 5 (M)": conf["model"].map(PAPER_TABLE5_PARAMS_M).map(_fmt)})
    for col in order:
        table[col] = conf[col].map(lambda v: _fmt(v, "{:,.1f}"))
    caption = ("Model configurations: learnable parameters, parameters in the paper's convention (frozen "
               "positional tables included), the paper's Table 5, and GMACs per image (one network evaluation) at "
               "each resolution.")
    return _with(_drop_empty(table), caption)


def _mask_columns(f: pd.DataFrame) -> dict[str, Any]:
    """Cost, speed and quality columns shared by the threshold and window/patch tables."""
    cols: dict[str, Any] = {
        "patch density (%)": f["patch_density"].map(lambda v: _fmt(v, "{:.2f}", 0.01)),
        "active windows": f["active_windows"].map(_count),
        "windows": f["total_windows"].map(_count),
        "GMACs": f["macs"].map(lambda v: _fmt(v, "{:,.1f}", 1e9)),
        _steps_label(f): f["macs_per_sr"].map(lambda v: _fmt(v, "{:,.2f}", 1e12)),
        **_latency_columns(f),
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


def _mask_notes(f: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Footnotes of a mask table: what the threshold and the averages mean."""
    notes = ["Threshold s on the LR image (range units, images in [-1, 1]); full mask = every window active."]
    if "images" in table.columns:
        notes.append("Values are means over the images counted in the last column.")
    return notes


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
    table = _drop_empty(table, keep=("model", "res", "threshold"))
    caption = ("Quadtree threshold ablation (Tables 3 and 6 layout): mask density, active windows, MACs per "
               "evaluation and per super-resolution" + (", latency" if "median latency (ms)" in table else "")
               + (" and quality" if any(n in table for n, _ in QUALITY.values()) else "") + " per threshold."
               + _measured_on(f, f["latency_median_ms"].notna()))
    return _with(table, caption, _mask_notes(f, table))


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
    f = _mean_over_images(f, block + ["patch", "window"])
    f = f.assign(block=f.groupby(block, dropna=False, sort=False).ngroup())
    f = f.sort_values(["block", "patch", "window"], kind="stable").reset_index(drop=True)
    keys = _shown_keys(f, ["batch", "dtype", "device_name", "threshold", "image_size", "scale"], None)
    if "threshold" in keys:
        keys["threshold"] = f.apply(_threshold_label, axis=1)
    table = pd.DataFrame({**_model_res(f), **keys, "patch": f["patch"].map(lambda v: _fmt(v, "{:.0f}")),
                          "window": f["window"].map(lambda v: _fmt(v, "{:.0f}")),
                          "params (M)": f["params"].map(lambda v: _fmt(v, scale=1e6)), **_mask_columns(f)})
    table = _drop_empty(table, keep=("model", "res", "patch", "window"))
    caption = ("Upstream patch and downstream window (Table 4 layout): parameters, mask density, active windows "
               "and MACs per setting." + _measured_on(f, f["latency_median_ms"].notna()))
    return _with(table, caption)


def failed_table(df: pd.DataFrame) -> pd.DataFrame:
    """Cells without a result (status oom or error) with their message."""
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
        "patch": f["patch"].map(lambda v: _fmt(v, "{:.0f}")),
        "overlap": f["overlap"].map(lambda v: _fmt(v, "{:.0f}")),
        "groups: M×N": f["groups"].map(groups),
        "patch evals": f["patch_evals"].map(lambda v: _fmt(v, "{:,.0f}")),
        "full-image-eq NFE": f["full_image_eq_nfe"].map(_fmt),
        "pixel-eq NFE": f["pixel_eq_nfe"].map(_fmt),
        "model calls": f["model_calls"].map(lambda v: _fmt(v, "{:,.0f}")),
        "uniform NFE": f["uniform_nfe"].map(lambda v: _fmt(v, "{:.0f}")),
        "peak memory (MiB)": f["peak_memory_bytes"].map(lambda v: _fmt(v, "{:,.1f}", MIB)),
        "uniform peak memory (MiB)": f["uniform"].map(lambda u: uniform(u, "peak_memory_bytes", MIB)),
        "time (s)": f["wall_time_s"].map(_fmt),
        "uniform time (s)": f["uniform"].map(lambda u: uniform(u, "wall_time_s", spec="{:,.2f}")),
        "PSNR-Y PGS (dB)": f["psnr_y"].map(lambda p: psnr(p, "pgs")),
        "PSNR-Y uniform (dB)": f["psnr_y"].map(lambda p: psnr(p, "uniform")),
        "PSNR-Y bicubic (dB)": f["psnr_y"].map(lambda p: psnr(p, "bicubic")),
        "device": f["device"].fillna(""),
    })
    table = _drop_empty(table, keep=("model", "patch evals", "full-image-eq NFE"))
    return _with(table, "Patch-adaptive group sampling: groups of patches (M patches x N steps from t0), network "
                 "evaluations in full-image equivalents, peak memory, time and PSNR-Y next to uniform sampling.")
