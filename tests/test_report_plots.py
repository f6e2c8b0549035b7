"""The report plots drawn from hand-built results rows: the Figures' artists (bars, colours, hatches, legends, ticks,
lines) are inspected before saving, and the saved files checked.

No measurement: every row is written with ``empty_row`` and read back with ``load_rows``.
"""
import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.patches import Rectangle

from qdm_bench.measure.results import append_result
from qdm_bench.report import load_rows
from qdm_bench.report.plot_style import FAMILY_COLORS, family_of, is_highlight, model_styles
from qdm_bench.report.plot_tradeoffs import _threshold_figure
from qdm_bench.report.plots import (
    _cost_figure, _figure5_figure, _pareto_figure, _pareto_frame, pareto_front, plot_cost_vs_res, plot_figure5,
    plot_pareto, plot_threshold,
)

from test_report import CPU, MIB, _row  # noqa: E402 - the same hand-built rows as the table tests


def _mem(key, model, res, mib, estimated, **values):
    """A row with peak memory (measured or a meta-device estimate) and MACs."""
    return _row(key, model, res, peak_mem_bytes=int(mib * MIB), mem_estimated=estimated,
                macs=mib * 1e9, **values)


def _latency(ms):
    return {"latency_median_ms": ms, "latency_p10_ms": 0.9 * ms, "latency_p90_ms": 1.1 * ms}


def _df(tmp_path, rows, name="r.jsonl"):
    path = tmp_path / name
    for r in rows:
        append_result(path, r)
    return load_rows(path)


@pytest.fixture
def cost_rows(tmp_path):
    """Four models (two QDM, a DiT, a U-Net) at 128 (measured, timed), 256 (measured) and 1024 (estimated)."""
    rows = []
    for model, base in (("qdm-s", 180), ("qdm-b", 500), ("dit-s/8", 25), ("unet", 290)):
        rows.append(_mem(f"{model}128", model, 128, base, False, **_latency(base * 9)))
        rows.append(_mem(f"{model}256", model, 256, base * 3, False))
        rows.append(_mem(f"{model}1024", model, 1024, base * 40, True))
    return _df(tmp_path, rows)


def _bars(ax):
    """(y-tick label, bar) for every bar of a horizontal bar panel (the panels share the first one's y labels)."""
    first = ax.figure.axes[0]
    labels = {round(t, 3): lab.get_text() for t, lab in zip(first.get_yticks(), first.get_yticklabels())}
    out = []
    for p in ax.patches:
        if isinstance(p, Rectangle) and p.get_width() > 0:
            y = p.get_y() + p.get_height() / 2
            out.append((labels[min(labels, key=lambda t: abs(t - y))], p))
    return out


def _legend_texts(fig):
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


# -- families and colours ------------------------------------------------------------------------------------------

def test_family_comes_from_the_registry_then_the_hint_then_the_prefix():
    assert family_of("qdm-l") == "qdm" and family_of("dit-xl/2") == "dit" and family_of("swin-unet") == "swin-unet"
    assert family_of("qdm-huge") == "qdm" and family_of("swin-tiny") == "swin-unet"
    assert family_of("my-net", hint="unet") == "unet" and family_of("my-net") == "other"


def test_a_family_keeps_its_colour_and_only_qdm_is_highlighted():
    a = model_styles(["dit-s/8"])
    b = model_styles(["unet", "dit-s/8", "qdm-s"])
    assert a["dit-s/8"].color == b["dit-s/8"].color == to_rgb(FAMILY_COLORS["dit"])
    assert is_highlight(b["qdm-s"].color)
    assert not any(is_highlight(FAMILY_COLORS[f]) for f in FAMILY_COLORS if f != "qdm")


# -- Figure 5 ------------------------------------------------------------------------------------------------------

def test_figure5_bars_have_family_colours_with_qdm_highlighted(cost_rows):
    fig, _ = _figure5_figure(cost_rows, 128)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        bars = _bars(ax)
        assert {m for m, _ in bars} == {"qdm-s", "qdm-b", "dit-s/8", "unet"}
        color = {m: to_rgb(p.get_facecolor()) for m, p in bars}
        assert is_highlight(color["qdm-s"]) and is_highlight(color["qdm-b"])
        assert color["qdm-s"] != color["qdm-b"]  # one family, two shades
        assert not is_highlight(color["dit-s/8"]) and not is_highlight(color["unet"])
        assert color["dit-s/8"] == to_rgb(FAMILY_COLORS["dit"]) and color["unet"] == to_rgb(FAMILY_COLORS["unet"])


def test_figure5_hatches_estimates_with_one_legend_entry_and_plain_value_labels(tmp_path):
    df = _df(tmp_path, [_mem("a", "qdm-s", 1024, 846, True), _mem("b", "dit-s/8", 1024, 288, False),
                        _mem("c", "unet", 1024, 1900, True),
                        _mem("d", "dit-l/8", 1024, 700, False), _mem("e", "dit-l/8", 1024, 728, True)])
    fig, caption = _figure5_figure(df, 1024)
    (ax,) = fig.axes  # no latency at 1024: memory alone
    hatched = {(m, bool(p.get_hatch())) for m, p in _bars(ax)}
    assert hatched == {("qdm-s", True), ("dit-s/8", False), ("unet", True), ("dit-l/8", False), ("dit-l/8", True)}
    texts = _legend_texts(fig)
    assert sum("estimated" in t for t in texts) == 1 and sum(t == "measured" for t in texts) == 1
    labels = [t.get_text() for t in ax.texts]
    assert labels and not any("estimated" in t for t in labels)
    assert sorted(labels) == sorted(["846", "288", "1,900", "700", "728"])  # MiB: the largest is under 2 GiB
    assert "latency not measured at this size" in caption
    assert f"measured on {CPU}" in caption and "estimated: meta-device trace (lower bound)" in caption


def test_figure5_names_no_device_when_every_value_is_estimated(tmp_path):
    df = _df(tmp_path, [_mem("a", "qdm-s", 1024, 846, True), _mem("c", "unet", 1024, 3000, True)])
    fig, caption = _figure5_figure(df, 1024)
    assert CPU not in caption and "estimated: meta-device trace (lower bound)" in caption
    assert "GiB" in fig.axes[0].get_xlabel()
    assert {t.get_text() for t in fig.axes[0].texts} == {"0.826", "2.93"}


def test_figure5_memory_only_has_one_panel_and_latency_only_too(cost_rows, tmp_path):
    fig, _ = _figure5_figure(cost_rows, 256)
    assert len(fig.axes) == 1 and "memory" in fig.axes[0].get_xlabel()
    df = _df(tmp_path, [_row("a", "qdm-s", 64, **_latency(100.0)), _row("b", "unet", 64, **_latency(250.0))])
    fig, caption = _figure5_figure(df, 64)
    assert len(fig.axes) == 1 and "latency" in fig.axes[0].get_xlabel() and "not measured" not in caption


def test_figure5_log_axis_labels_decades_only(tmp_path):
    df = _df(tmp_path, [_mem("a", "dit-s/8", 128, 2, False, **_latency(10.0)),
                        _mem("b", "unet", 128, 900, False, **_latency(5000.0))])
    fig, _ = _figure5_figure(df, 128)
    for ax in fig.axes:  # both panels share the scale
        assert ax.get_xscale() == "log"
        major = [t.get_text() for t in ax.get_xticklabels()]
        minor = [t.get_text() for t in ax.get_xticklabels(minor=True)]
        assert major and all(set(t.replace(",", "")) <= set("0.1") or t.startswith("$10^") for t in major)
        assert not any(minor) and not any("×" in t for t in major)


def test_figure5_without_values_raises(cost_rows, tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        _figure5_figure(cost_rows, 512)
    assert all(p.stat().st_size > 0 for p in plot_figure5(cost_rows, 128, tmp_path / "f5"))


# -- cost vs resolution --------------------------------------------------------------------------------------------

def test_cost_vs_res_lines_differ_and_both_panels_have_legends(cost_rows):
    fig, _ = _cost_figure(cost_rows)
    ax_c, ax_m = fig.axes
    lines = [ln for ln in ax_c.get_lines() if not ln.get_label().startswith("_")]
    styles = [(to_rgb(ln.get_color()), ln.get_linestyle(), ln.get_marker()) for ln in lines]
    assert len(styles) == 4 and len(set(styles)) == 4
    assert len({c for c, _, _ in styles}) == 4 and len({m for _, _, m in styles}) == 4
    models = {"qdm-s", "qdm-b", "dit-s/8", "unet"}
    assert models <= set(_legend_texts_of(ax_c)) and models <= set(_legend_texts_of(ax_m))
    assert {t for t in _legend_texts_of(ax_m) if t not in models} == {"measured", "estimated (lower bound)"}
    assert [t.get_text() for t in ax_c.get_xticklabels()] == ["128", "256", "512", "1024"]


def _legend_texts_of(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_cost_vs_res_memory_is_one_line_solid_then_dashed_joined_at_the_switch(cost_rows):
    fig, _ = _cost_figure(cost_rows)
    ax_m = fig.axes[1]
    color = {}
    for ln in ax_m.get_lines():
        if ln.get_gid() in ("memory-measured", "memory-estimated"):
            color.setdefault(to_rgb(ln.get_color()), []).append(ln)
    assert len(color) == 4
    for lines in color.values():
        solid = [ln for ln in lines if ln.get_gid() == "memory-measured"]
        dashed = [ln for ln in lines if ln.get_gid() == "memory-estimated"]
        assert len(solid) == len(dashed) == 1
        assert solid[0].get_linestyle() == "-" and dashed[0].get_linestyle() == "--"
        assert list(solid[0].get_xdata()) == [128, 256] and list(dashed[0].get_xdata()) == [256, 1024]
        assert solid[0].get_ydata()[-1] == dashed[0].get_ydata()[0]  # joined at the last measured point


def test_cost_vs_res_log_ticks_are_clean(cost_rows, tmp_path):
    fig, _ = _cost_figure(cost_rows)
    for ax in fig.axes:
        assert not any(t.get_text() for t in ax.get_yticklabels(minor=True))
        assert not any("×" in t.get_text() for t in ax.get_yticklabels())
    assert all(p.stat().st_size > 0 for p in plot_cost_vs_res(cost_rows, tmp_path / "cost"))


# -- threshold curves ----------------------------------------------------------------------------------------------

def _qdm(key, threshold, density, macs, psnr=None, **values):
    row = _row(key, "qdm-l", 128, threshold=threshold, patch_density=density, active_windows=int(64 * density),
               total_windows=64, window=8, patch=8, macs=macs, macs_per_sr=15 * macs, **values)
    return {**row, **({"psnr": psnr} if psnr is not None else {})}


@pytest.fixture
def sweep(tmp_path):
    """A QDM-L threshold sweep on two images, with PSNR-Y, and a DiT row with PSNR-Y (full compute)."""
    rows = []
    for image, shift in (("a.png", 0.0), ("b.png", 1.0)):
        for s, dens, psnr in ((None, 1.0, 30.0), (0.0, 0.5, 30.0), (0.15, 0.1, 29.5), (0.6, 0.05, 28.0)):
            rows.append({**_qdm(f"{image}{s}", s, dens, 1000e9 * dens + 200e9, psnr + shift), "image": image})
    rows.append({**_row("dit", "dit-s/8", 128, macs=6000e9, macs_per_sr=15 * 6000e9), "psnr": 29.0,
                 "image": "a.png"})
    return _df(tmp_path, rows)


def test_threshold_has_a_psnr_panel_and_a_dashed_full_mask_reference(sweep, tmp_path):
    fig, _ = _threshold_figure(sweep)
    assert len(fig.axes) == 3 and fig.axes[2].get_ylabel() == "PSNR-Y (dB)"
    for ax, full in zip(fig.axes, (100.0, 1.2e3 / 1.0, 30.5)):
        (ref,) = [ln for ln in ax.get_lines() if (ln.get_gid() or "").startswith("full")]
        assert ref.get_linestyle() == "--" and ref.get_ydata()[0] == pytest.approx(full)
    texts = [t for ax in fig.axes if ax.get_legend() for t in _legend_texts_of(ax)]
    assert texts == ["qdm-l", "full mask (reference)"]
    assert all(p.stat().st_size > 0 for p in plot_threshold(sweep, tmp_path / "thr"))


def test_threshold_without_psnr_has_two_panels(tmp_path):
    df = _df(tmp_path, [_qdm("f", None, 1.0, 1e12), _qdm("t", 0.1, 0.3, 5e11)])
    fig, _ = _threshold_figure(df)
    assert len(fig.axes) == 2


# -- Pareto --------------------------------------------------------------------------------------------------------

def _brute_front(c, s):
    return [not any(c[j] <= c[i] and s[j] >= s[i] and (c[j] < c[i] or s[j] > s[i]) for j in range(len(c)))
            for i in range(len(c))]


def test_pareto_front_is_exactly_the_non_dominated_points():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        c, s = rng.integers(0, 5, n).astype(float), rng.integers(0, 5, n).astype(float)  # ties included
        assert list(pareto_front(c, s)) == _brute_front(c, s)
    assert list(pareto_front([1, 2, 3, 2], [10, 9, 12, 11])) == [True, False, True, True]


def test_pareto_plot_averages_images_labels_points_and_steps_through_the_front(sweep, tmp_path):
    f = _pareto_frame(sweep)
    assert sorted(f["point"]) == ["full", "full", "s=0.00", "s=0.15", "s=0.60"]
    qdm_full = f[(f["model"] == "qdm-l") & (f["point"] == "full")].iloc[0]
    assert qdm_full["psnr"] == pytest.approx(30.5) and qdm_full["tmacs_sr"] == pytest.approx(15 * 1.2)
    fig, _ = _pareto_figure(sweep)
    (ax,) = fig.axes
    (step,) = [ln for ln in ax.get_lines() if ln.get_gid() == "pareto-front"]
    on = _brute_front(list(f["tmacs_sr"]), list(f["psnr"]))
    expected = sorted(zip(f["tmacs_sr"][on], f["psnr"][on]))
    got = sorted(set(zip(step.get_xdata(), step.get_ydata())))
    assert len(got) == len(expected) == 3 and np.allclose(got, expected)
    labels = sorted(t.get_text() for t in ax.texts if t.get_gid() == "point-label")
    assert labels == sorted(f["point"])
    points = {ln.get_label(): ln for ln in ax.get_lines() if ln.get_gid() == "points"}
    assert set(points) == {"qdm-l", "dit-s/8"} and is_highlight(points["qdm-l"].get_color())
    assert all(p.stat().st_size > 0 for p in plot_pareto(sweep, tmp_path / "pareto"))


def test_pareto_without_quality_raises(cost_rows, tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_pareto(cost_rows, tmp_path / "none")


def test_pareto_accepts_a_png_suffix(sweep, tmp_path):
    paths = plot_pareto(sweep, tmp_path / "p.png")
    assert [p.name for p in paths] == ["p.png", "p.pdf"] and sorted(tmp_path.glob("p*")) == sorted(paths)
