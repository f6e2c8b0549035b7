"""Shared report constants and the frame helpers (cell merging, value formatting) that tables and plots build on."""
from __future__ import annotations

import functools
from typing import Any, Sequence

import numpy as np
import pandas as pd

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
EXTRA_KEYS = ("image", "image_size", "scale", "sampler", "ensemble", "posterior", "tile",
              "metric_convention")  # columns that identify a cell
IMAGE_KEYS = ("image_size", "scale", "sampler", "ensemble", "tile",
              "metric_convention")  # sweep-block keys besides the model's settings
CONFIG = ["model", "height", "width", "batch", "dtype", "device", "device_name", "compile", "window", "patch",
          "threshold", "density"]
SHOWN = {"res": "res", "batch": "batch", "dtype": "dtype", "device_name": "device", "compile": "compile",
         "window": "window", "patch": "patch", "sampler": "sampler", "tile": "tile",
         "posterior": "posterior", "ensemble": "mean of", "metric_convention": "metric convention"}
ARCH_OPTIONS = ("window", "patch", "chunk_size")  # cell-key fields that select a non-default architecture
FAILED = ("oom", "error")  # the statuses of cells without a result
PAPER_TABLE5_PARAMS_M = {"qdm-s": 50.87, "qdm-b": 199.06, "qdm-l": 691.94}
MAC_CONVENTION = ("MACs count the multiply-accumulates of convolutions and matmuls, attention products (QKᵀ, AV) "
                  "included; norms, softmax and element-wise ops are excluded. FLOPs = 2·MACs. GMACs are per "
                  "network evaluation; TMACs/SR are for a whole super-resolution (num_steps evaluations).")
MEMORY_NOTE = ("Peak memory is the working memory above resident weights and inputs. Estimated values (marked †) come "
               "from a meta-device trace of live tensor bytes and are a lower bound (no allocator rounding, "
               "workspaces or CUDA context); they are kept apart from measured values.")


# -------------------------------------------------------------------------------------------------------- cells

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


# ------------------------------------------------------------------------------------------------------- frames

def _dense(df: pd.DataFrame) -> pd.DataFrame:
    """Merged unmasked (full-mask) rows, one per configuration; the image a sweep named does not matter for them."""
    m = _merge_cells(df)
    if m.empty:
        return m
    m = m[m["threshold"].isna() & m["density"].isna()]
    keys = [k for k in _keys(m) if k not in ("image", "image_size", "scale")]
    return m.groupby(keys, dropna=False, sort=False).last().reset_index()


def _explicit_options(key: Any) -> bool:
    """Whether a cell key sets an architecture option (window, patch, ``--model-option``) instead of a default."""
    import json

    if not isinstance(key, str) or not key.startswith("{"):
        return False
    try:
        d = json.loads(key)
    except ValueError:
        return False
    return any(v is not None and (k in ARCH_OPTIONS or k not in _cell_fields()) for k, v in d.items())


@functools.lru_cache(maxsize=1)
def _cell_fields() -> frozenset[str]:
    """The fields of a cell key that are not architecture options (every record field, and the version)."""
    from qdm_bench.measure.cell import Cell

    return frozenset((set(Cell.create("model", 16, 16).flat()) - set(ARCH_OPTIONS)) | {"version"})


def _default_configs(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each model's default configuration: the (window, patch) its option-free cells ran with.

    Ablation cells (``ablate window``/``patch``, ``--window``/``--patch``) set an option in their key; their rows are
    kept only where they equal a default configuration (they are then the same network).
    """
    if df.empty or "key" not in df.columns:
        return df
    explicit = df["key"].map(_explicit_options).astype(bool)
    config = list(zip(df["model"], df["window"].fillna(-1), df["patch"].fillna(-1)))
    defaults = {c for c, e in zip(config, explicit) if not e}
    return df[[not e or c in defaults for c, e in zip(config, explicit)]]


def _models_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Merged unmasked rows of the models' default configurations (Figure 5, Table 5): ablation rows left out."""
    return _dense(_default_configs(df))


def _figure5_frame(df: pd.DataFrame, res: int | tuple[int, int]) -> pd.DataFrame:
    """Merged unmasked (dense) rows of default configurations at one resolution, with a ``label`` column."""
    h, w = _res_pair(res)
    d = _models_frame(df)
    if d.empty:
        return d
    sel = d[d["height"].eq(h) & d["width"].eq(w)].reset_index(drop=True)
    return sel.assign(label=_label(sel, ["batch", "dtype", "device_name", "compile", "window", "patch"]))


def _col(f: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of ``f``, or an all-missing one (results files written before it existed)."""
    return f[name] if name in f.columns else pd.Series([None] * len(f), index=f.index, dtype=object)


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
