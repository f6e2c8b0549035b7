"""Quality tables: every score per image in a long format, and a compact summary of the means per setting."""
from __future__ import annotations

import pandas as pd

from qdm_bench.report.frames import QUALITY, _count, _fmt, _merge_cells, _res, _shown_keys, _threshold_label

SETTING = ["model", "height", "width", "threshold", "density", "sampler", "posterior", "ensemble", "tile", "metric_convention",
           "scale", "image_size"]  # what identifies a quality setting (besides the image)


def _quality_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Merged ok rows that carry a PSNR-Y score (quality and sr cells)."""
    m = _merge_cells(df)
    if m.empty or "psnr" not in m.columns:
        return pd.DataFrame()
    f = m[m["psnr"].notna()].reset_index(drop=True)
    return f.assign(**{c: None for c in SETTING if c not in f.columns})


def _setting_columns(f: pd.DataFrame) -> dict[str, pd.Series]:
    """Display columns of the setting: model, res when it varies, mask, and the sampling keys that vary."""
    cols = {"model": f["model"]}
    cols.update(_shown_keys(f, ["res", "sampler", "posterior", "ensemble", "tile", "metric_convention"], None))
    cols["mask"] = f.apply(_threshold_label, axis=1)
    return cols


def _conventions_note(f: pd.DataFrame) -> str:
    """What the metric convention of the rows means (one convention: named; several: a column shows it)."""
    conv = [c if isinstance(c, str) else "float" for c in f["metric_convention"].astype(object).unique()]
    conv = list(dict.fromkeys(conv))
    if len(conv) > 1:
        return "Metric convention per row: float (SR scored as floats) or published (uint8, MATLAB bicubic LR)."
    if conv[0] == "published":
        return ("Published-benchmark convention: LR by MATLAB-compatible bicubic, SR and HR rounded to uint8; "
                "PSNR/SSIM on Y (BT.601), border crop = scale.")
    return "SR scored as floats; LR by antialiased bicubic; PSNR/SSIM on Y (BT.601), border crop = scale."


def quality_per_image(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, image, metric): the long format, for plotting or statistics elsewhere."""
    f = _quality_frame(df)
    if f.empty:
        return pd.DataFrame()
    setting = pd.DataFrame(_setting_columns(f))
    setting["image"] = f["image"].fillna("") if "image" in f.columns else ""
    parts = []
    for q, (name, spec) in QUALITY.items():
        if q in f.columns and f[q].notna().any():
            part = setting.assign(metric=name, value=f[q].map(lambda v, spec=spec: _fmt(v, spec)))
            parts.append(part[f[q].notna().to_numpy()])
    table = pd.concat(parts, ignore_index=True)
    order = {name: i for i, (name, _) in enumerate(QUALITY.values())}
    table = table.assign(_o=table["metric"].map(order)).sort_values(
        [c for c in ("model", "mask", "image") if c in table.columns] + ["_o"], kind="stable").drop(columns="_o")
    table = table.reset_index(drop=True)
    table.attrs.update(caption="Quality per image (long format: one row per setting, image and metric).",
                       notes=[_conventions_note(f)])
    return table


def quality_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean scores per setting over its images, the bicubic floor and the gain over it, with the image count."""
    f = _quality_frame(df)
    if f.empty:
        return pd.DataFrame()
    keys = [c for c in SETTING if c in f.columns]
    grouped = f.groupby(keys, dropna=False, sort=False)
    means = grouped[[q for q in QUALITY if q in f.columns] + ["macs_per_sr"]].mean()
    g = means.join(grouped["image"].nunique().rename("images") if "image" in f.columns
                   else grouped.size().rename("images")).reset_index()
    table = pd.DataFrame(_setting_columns(g))
    if g["height"].nunique() == 1 and "res" not in table.columns:
        table.insert(1, "res", [_res(h, w) for h, w in zip(g["height"], g["width"])])
    for q in ("psnr", "ssim", "psnr_rgb", "lpips", "clipiqa", "musiq", "bicubic_psnr", "bicubic_ssim"):
        if q in g.columns and g[q].notna().any():
            name, spec = QUALITY[q]
            table[name] = g[q].map(lambda v, spec=spec: _fmt(v, spec))
    if "bicubic_psnr" in g.columns and g["bicubic_psnr"].notna().any():
        table["gain over bicubic (dB)"] = (g["psnr"] - g["bicubic_psnr"]).map(lambda v: _fmt(v, "{:+.2f}"))
    table["TMACs/SR"] = g["macs_per_sr"].map(lambda v: _fmt(v, "{:,.2f}", 1e12))
    table["images"] = g["images"].map(_count)
    table = table[[c for c in table.columns if table[c].astype(str).ne("").any() or c in ("model", "mask")]]
    table.attrs.update(caption="Quality summary: mean scores per setting over its images, next to bicubic "
                       "upsampling of the same LR images.", notes=[_conventions_note(g)])
    return table
