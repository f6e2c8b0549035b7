"""The shared look of the report plots: family colours, per-model shades and markers, units, ticks, caption, save.

Every family has one fixed base colour (:data:`FAMILY_COLORS`), so a family looks the same in every figure; QDM's is
a strong colour and the others are muted, which sets QDM apart.  Models of one family get shades of its colour
(darker to lighter in registry order) and, where lines are drawn, their own marker.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

HIGHLIGHT = "qdm"  # the family drawn in a strong colour
FAMILY_COLORS = {
    "qdm": "#d62728",  # strong red: the highlighted family
    "dit": "#7f9cc4",  # muted blue
    "unet": "#86b386",  # muted green
    "swin-unet": "#a894c8",  # muted purple
    "bi-diffsr": "#d4a46a",  # muted ochre
    "dualdomain": "#72b5b1",  # muted teal
    "first-stage": "#b39a84",  # muted brown
    "other": "#9a9a9a",  # grey: user / plugin / unknown models
}
PREFIXES = (("swin", "swin-unet"), ("qdm", "qdm"), ("dit", "dit"), ("unet", "unet"), ("bi-diffsr", "bi-diffsr"),
            ("bidiffsr", "bi-diffsr"), ("dualdomain", "dualdomain"), ("kl-f", "first-stage"), ("vq-f", "first-stage"))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")
MEASURED_LABEL = "measured"
ESTIMATED_LABEL = "estimated: meta-device trace (lower bound)"
ESTIMATED_SHORT = "estimated (lower bound)"
ESTIMATED_HATCH = "////"


@dataclass(frozen=True)
class Style:
    """How one model is drawn: its family, colour (an RGB triple) and marker."""

    family: str
    color: tuple[float, float, float]
    marker: str


# ------------------------------------------------------------------------------------------------------ families

def _registry_family(model: str) -> str | None:
    """The registered family of a model name (no import of ``package.module:factory`` paths), or None."""
    if ":" in model:
        return None
    try:
        from qdm_bench.registry import resolve

        return resolve(model).family
    except Exception:  # an unknown name: the caller guesses from the prefix
        return None


def _registry_order() -> dict[str, int]:
    """Position of each registered model name (the order shades are handed out in)."""
    try:
        from qdm_bench.registry import list_models

        return {name: i for i, name in enumerate(list_models())}
    except Exception:
        return {}


def family_of(model: Any, hint: Any = None) -> str:
    """A model's family: the registry's when the name resolves, else the row's ``family`` hint, else a prefix guess."""
    name = str(model)
    for fam in (_registry_family(name), None if pd.isna(hint) else str(hint)):
        if fam in FAMILY_COLORS:
            return fam
    low = name.lower().rpartition(":")[2]
    for prefix, fam in PREFIXES:
        if low.startswith(prefix):
            return fam
    return "other"


def _shade(base: str, i: int, n: int) -> tuple[float, float, float]:
    """The ``i``-th of ``n`` shades of ``base``: darker to lighter, the middle one the base colour itself."""
    rgb = np.array(to_rgb(base))
    if n <= 1:
        return tuple(float(c) for c in rgb)
    t = -0.3 + 0.65 * i / (n - 1)  # < 0 mixes towards black, > 0 towards white
    out = rgb * (1 + t) if t < 0 else rgb + (1 - rgb) * t
    return tuple(float(c) for c in np.clip(out, 0, 1))


def ranked_names(names: Iterable[Any], models: dict[str, str] | None = None) -> list[str]:
    """Distinct names in registry order of their model (``models`` maps a label to it), unknown ones after."""
    order, models = _registry_order(), models or {}
    names = list(dict.fromkeys(str(m) for m in names))
    return sorted(names, key=lambda m: (order.get(models.get(m, m), len(order)), m))


def model_styles(names: Iterable[Any], families: dict[Any, Any] | None = None,
                 models: dict[Any, Any] | None = None) -> dict[str, Style]:
    """A :class:`Style` per distinct name: its family's colour shaded within the family, and a marker of its own.

    ``names`` are models or series labels; ``models`` maps a label to its registered model (for the family and the
    registry order of the shades) and ``families`` to a family hint (a row's ``family``).
    """
    names = list(dict.fromkeys(str(m) for m in names))
    hints = {str(k): v for k, v in (families or {}).items()}
    base = {str(k): str(v) for k, v in (models or {}).items()}
    fam = {m: family_of(base.get(m, m), hints.get(m)) for m in names}
    ranked = ranked_names(names, base)
    out = {}
    for f in dict.fromkeys(fam[m] for m in ranked):
        members = [m for m in ranked if fam[m] == f]
        for i, m in enumerate(members):
            out[m] = Style(f, _shade(FAMILY_COLORS[f], i, len(members)), "")
    return {m: Style(out[m].family, out[m].color, MARKERS[i % len(MARKERS)]) for i, m in enumerate(names)}


def frame_styles(frame: pd.DataFrame, by: str = "model") -> dict[str, Style]:
    """:func:`model_styles` of a frame's ``by`` column (a model or label column; ``family`` as the hint)."""
    names = frame[by].astype(str)
    hints = dict(zip(names, frame["family"])) if "family" in frame.columns else None
    return model_styles(names, hints, dict(zip(names, frame["model"].astype(str))))


def is_highlight(color: Any) -> bool:
    """Whether a colour is a shade of the highlighted (QDM) family colour: its hue, and saturated."""
    h, _, s = colorsys.rgb_to_hls(*to_rgb(color))
    h0, _, s0 = colorsys.rgb_to_hls(*to_rgb(FAMILY_COLORS[HIGHLIGHT]))
    return min(abs(h - h0), 1 - abs(h - h0)) < 0.02 and s > 0.5 * s0


# --------------------------------------------------------------------------------------------------- units, ticks

def memory_unit(mib: Sequence[float] | np.ndarray) -> tuple[float, str]:
    """(MiB per unit, unit name): GiB when the largest value reaches 2 GiB, else MiB."""
    v = np.asarray(mib, dtype=float)
    v = v[~np.isnan(v)]
    return (1024.0, "GiB") if v.size and v.max() >= 2048 else (1.0, "MiB")


def latency_unit(ms: Sequence[float] | np.ndarray) -> tuple[float, str]:
    """(ms per unit, unit name): s when the largest value reaches 10 s, else ms."""
    v = np.asarray(ms, dtype=float)
    v = v[~np.isnan(v)]
    return (1000.0, "s") if v.size and v.max() >= 10_000 else (1.0, "ms")


def fmt_value(v: float) -> str:
    """A bar label: three significant figures, thousands separated (``0.510``, ``14.0``, ``846``, ``6,106``)."""
    if pd.isna(v):
        return ""
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 1 else f"{v:#.3g}"


def _plain(v: float, _pos: Any = None) -> str:
    """A tick label without offsets or scientific notation (``0.5``, ``250``, ``10,000``)."""
    return f"{v:,.6g}"


def wide(values: Iterable[float], ratio: float = 100.0) -> bool:
    """True when positive values span more than ``ratio`` (a log axis reads better)."""
    v = np.asarray([x for x in values if pd.notna(x) and x > 0], dtype=float)
    return v.size > 1 and v.max() / v.min() > ratio


def linear_axis(ax: Any, axis: str = "y") -> None:
    """Readable linear ticks: a few round values, plain labels."""
    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
    a.set_major_formatter(FuncFormatter(_plain))


def _decade_label(plain: bool) -> FuncFormatter:
    """Decade labels: plain numbers (``0.1``, ``100``, ``10,000``) or powers of ten (``10⁶`` as mathtext)."""
    return FuncFormatter(lambda v, _p: _plain(v) if plain else f"$10^{{{int(round(np.log10(v)))}}}$")


def log_axis(ax: Any, values: Iterable[float], axis: str = "y", headroom: float = 1.0) -> None:
    """A log axis with labelled decades only, its limits the decades enclosing ``values`` (at least two).

    ``headroom``: the upper limit is at least this factor above the largest value (room for bar labels).
    """
    v = np.asarray([x for x in values if pd.notna(x) and x > 0], dtype=float)
    if not v.size:
        return
    lo, hi = int(np.floor(np.log10(v.min()))), int(np.ceil(np.log10(v.max() * headroom)))
    hi = max(hi, lo + 1)
    decades = [10.0**k for k in range(lo, hi + 1)]
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    (ax.set_ylim if axis == "y" else ax.set_xlim)(decades[0], decades[-1])
    a = ax.yaxis if axis == "y" else ax.xaxis
    a.set_major_locator(FixedLocator(decades))
    a.set_major_formatter(_decade_label(plain=-2 <= lo and hi <= 4))
    a.set_minor_locator(FixedLocator([m * d for d in decades[:-1] for m in range(2, 10)]))
    a.set_minor_formatter(NullFormatter())


def pow2_axis(ax: Any, values: Iterable[float]) -> None:
    """A log₂ x axis with ticks at the powers of two that span ``values``, plain labels, no minor ticks."""
    v = np.asarray([x for x in values if pd.notna(x) and x > 0], dtype=float)
    ax.set_xscale("log", base=2)
    if not v.size:
        return
    ticks = [2.0**k for k in range(int(np.floor(np.log2(v.min()))), int(np.ceil(np.log2(v.max()))) + 1)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(ticks[0] / 2**0.25, ticks[-1] * 2**0.25)


# ------------------------------------------------------------------------------------------------ caption, save

def _days(frame: pd.DataFrame) -> str:
    """The measurement date (or date span) of the rows."""
    days = sorted(pd.to_datetime(frame.get("timestamp", pd.Series(dtype=object)), utc=True, errors="coerce",
                                 format="ISO8601").dropna().dt.strftime("%Y-%m-%d").unique())
    return "date not recorded" if not days else days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def _devices(frame: pd.DataFrame) -> str:
    """The device name(s) of the rows (the device kind where no name was recorded)."""
    names = frame["device_name"].fillna(frame["device"]).dropna().unique() if len(frame) else []
    return ", ".join(map(str, names)) or "device not recorded"


def _caption(frame: pd.DataFrame) -> str:
    """Device name(s) and measurement date(s) of the rows."""
    names = frame["device_name"].fillna(frame["device"]).dropna().unique() if len(frame) else []
    return f"qdm-bench · device: {', '.join(map(str, names)) or 'not recorded'} · measured {_days(frame)}"


def measured_caption(measured: pd.DataFrame, estimated: bool, notes: Sequence[str] = ()) -> str:
    """``measured on DEVICE, DATE; estimated: meta-device trace (lower bound)``: devices named for measured rows."""
    parts = [f"measured on {_devices(measured)}, {_days(measured)}"] if len(measured) else []
    if estimated:
        parts.append("estimated: meta-device trace (lower bound)")
    return " · ".join(["qdm-bench", "; ".join(parts) or "no measured values", *notes])


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
