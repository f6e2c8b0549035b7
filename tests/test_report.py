"""Reports from results files alone: tables (Markdown and LaTeX), plots (PNG and PDF) and the index page.

The fixture is a small hand-built results file (no measurement): three models at two resolutions with measured and
estimated memory, a QDM-L threshold sweep with its full-mask row, a failed (oom) cell and a repeated cell key.
"""
import re

import pytest
import torch

from qdm_bench.report import (
    figure5_table,
    load_rows,
    plot_cost_vs_res,
    plot_figure5,
    plot_quadtree_overlay,
    plot_threshold,
    render,
    table5,
    threshold_table,
    window_patch_table,
    write_report,
)
from qdm_bench.measure.results import ResultsError, append_result, empty_row

CPU = "Test CPU 9000"
MIB = 2**20
STAMP = "2026-11-20T10:00:00+00:00"


def _row(key, model, res, **values):
    """An ok row with the environment filled in."""
    base = {"key": key, "model": model, "family": model.split("-")[0], "height": res, "width": res, "batch": 1,
            "dtype": "fp32", "device": "cpu", "num_steps": 15, "device_name": CPU, "torch_version": "2.13.0+cpu",
            "git_commit": "abc123", "timestamp": STAMP, "threads": 1, "status": "ok"}
    return empty_row(**{**base, **values})


def _qdm(key, res, threshold, density, active, macs, **values):
    """A QDM-L row of a threshold sweep (threshold None: the full mask)."""
    return _row(key, "qdm-l", res, threshold=threshold, patch_density=density, window_density=active / 64,
                active_windows=active, total_windows=64, window=8, patch=8, params=687_490_000,
                params_paper=691_940_000, macs=macs, macs_per_sr=15 * macs, **values)


@pytest.fixture
def results(tmp_path):
    """A results file with cost rows, a threshold sweep, a failed cell and a repeated key."""
    path = tmp_path / "results.jsonl"
    rows = [
        _row("s128", "qdm-s", 128, params=49_200_000, params_paper=50_870_000, macs=89.4e9, macs_per_sr=15 * 89.4e9,
             peak_mem_bytes=210 * MIB, mem_estimated=False, latency_median_ms=1676.6, latency_p10_ms=1580.6,
             latency_p90_ms=1765.7, throughput_img_s=0.6, window=8, patch=8, patch_density=1.0, active_windows=64,
             total_windows=64),
        _row("d128", "dit-s/8", 128, params=32_680_000, macs=6.1e9, peak_mem_bytes=23 * MIB, mem_estimated=False,
             latency_median_ms=124.7, latency_p10_ms=118.7, latency_p90_ms=128.0, throughput_img_s=8.0, patch=8),
        _row("u128", "unet", 128, params=116e6, status="error", message="first try failed"),
        _row("u128", "unet", 128, params=116e6, macs=361.9e9, peak_mem_bytes=328 * MIB, mem_estimated=False,
             latency_median_ms=7154.4, latency_p10_ms=6782.6, latency_p90_ms=7336.2, throughput_img_s=0.14),
        _row("s1024", "qdm-s", 1024, params=49_200_000, params_paper=50_870_000, macs=26418e9,
             peak_mem_bytes=846 * MIB, mem_estimated=True, mem_method="estimated:live-bytes-meta", window=8, patch=8,
             patch_density=1.0, active_windows=4096, total_windows=4096),
        _row("d1024", "dit-s/8", 1024, params=32_680_000, macs=2825e9, peak_mem_bytes=288 * MIB,
             mem_estimated=False, patch=8),
        _row("u1024", "unet", 1024, params=116e6, macs=808869e9, peak_mem_bytes=9600 * MIB, mem_estimated=True),
        _row("u2048", "unet", 2048, status="oom", message="CUDA out of memory. Tried to allocate 64 GiB"),
        _qdm("full", 128, None, 1.0, 64, 1221e9),
        _qdm("t0", 128, 0.0, 0.49, 40, 729e9),
        _qdm("t15", 128, 0.15, 0.096, 12, 303e9),
        _qdm("t60", 128, 0.6, 0.046, 6, 243e9),
    ]
    for r in rows:
        append_result(path, r)
    return path


def _cells(table_text, row_start):
    """The cells of the first Markdown table row that starts with ``row_start``."""
    line = next(ln for ln in table_text.splitlines() if ln.startswith(f"| {row_start} "))
    return [c.strip() for c in line.strip("|").split("|")]


def _headers(table_text):
    """The header cells of a Markdown table."""
    return [c.strip() for c in table_text.splitlines()[0].strip("|").split("|")]


# -- loading and tables ------------------------------------------------------------------------------------------

def test_load_rows_keeps_the_last_row_of_a_repeated_key(results):
    df = load_rows(results)
    assert len(df) == 11
    unet = df[df["key"].eq("u128")]
    assert list(unet["status"]) == ["ok"] and unet["macs"].iloc[0] == pytest.approx(361.9e9)


def test_figure5_table_keeps_estimated_memory_out_of_the_measured_column(results):
    df = load_rows(results)
    md = render(figure5_table(df, 1024))
    tex = render(figure5_table(df, 1024), "latex_booktabs")
    heads = _headers(md)
    measured, estimated = heads.index("peak memory (MiB)"), heads.index("peak memory† (MiB)")
    qdm, dit, unet = _cells(md, "qdm-s"), _cells(md, "dit-s/8"), _cells(md, "unet")
    assert qdm[measured] == "" and qdm[estimated] == "846"  # the estimate is marked by its column's footnote
    assert unet[measured] == "" and unet[estimated] == "9,600"
    assert dit[measured] == "288" and dit[estimated] == ""
    assert "est" not in "".join(qdm + dit + unet)  # no text in numeric cells
    caption = figure5_table(df, 1024).attrs["caption"]
    assert "† estimated" in md and f"Measured on {CPU} (1 CPU thread)" in caption  # device: measured values only
    assert CPU not in md  # not repeated on every row
    assert "qdm-l" not in md  # threshold rows are not Figure-5 rows; the dense qdm-l is at 128 only
    assert "2048" not in md  # the oom cell is not a cost row
    assert tex.startswith("\\begin{table}") and "\\toprule" in tex and "\\caption{" in tex
    assert "& 846 &" in tex.replace("\\\\", "&") and "peak memory\\textsuperscript{\\dag} (MiB)" in tex


def test_figure5_table_at_128_has_latency_with_its_spread(results):
    md = render(figure5_table(load_rows(results), 128))
    heads = _headers(md)
    assert "peak memory† (MiB)" not in heads  # no estimate at 128: the column is not written empty
    row = _cells(md, "qdm-s")
    assert [row[heads.index(h)] for h in ("median latency (ms)", "p10 (ms)", "p90 (ms)")] == [
        "1,676.6", "1,580.6", "1,765.7"]
    assert row[heads.index("params (M)")] == "49.20"
    assert _cells(md, "qdm-l")[heads.index("GMACs")] == "1,221.0"


def test_table5_shows_both_parameter_conventions_and_macs_per_resolution(results):
    table = table5(load_rows(results))
    md, tex = render(table), render(table, "latex_booktabs")
    heads = _headers(md)
    assert {"params (M)", "params, paper convention (M)", "paper Table 5 (M)", "GMACs @ 128x128",
            "GMACs @ 1024x1024"} <= set(heads)
    row = _cells(md, "qdm-l")
    assert row[heads.index("params, paper convention (M)")] == "691.94"
    assert row[heads.index("paper Table 5 (M)")] == "691.94"
    assert _cells(md, "dit-s/8")[heads.index("paper Table 5 (M)")] == ""
    assert "GMACs @ 1024x1024" in tex


def test_threshold_table_puts_the_full_mask_first(results):
    table = threshold_table(load_rows(results))
    md, tex = render(table), render(table, "latex_booktabs")
    assert list(table["threshold"]) == ["full mask", "0.00", "0.15", "0.60"]
    density = [float(v) for v in table["patch density (%)"]]
    assert density == sorted(density, reverse=True) and density[0] == 100.0
    assert list(table["active windows"]) == ["64", "40", "12", "6"] and set(table["windows"]) == {"64"}
    assert list(table["TMACs/SR (15 steps)"]) == ["18.32", "10.94", "4.54", "3.65"]
    assert "median latency (ms)" not in table.columns and "PSNR-Y (dB)" not in table.columns
    assert md.index("full mask") < md.index("0.15")
    assert tex.index("full mask") < tex.index("0.15") and "patch density (\\%)" in tex


def test_threshold_table_averages_over_images_and_keeps_quality(tmp_path):
    path = tmp_path / "q.jsonl"
    for image, psnr, dens in (("a.png", 30.0, 0.5), ("b.png", 32.0, 0.3)):
        for s, scale in ((None, 1.0), (0.1, dens)):
            row = _qdm(f"{image}{s}", 128, s, scale, int(64 * scale), 1000e9 * scale)
            append_result(path, {**row, "image": image, "psnr": psnr - (s or 0), "ssim": 0.9, "lpips": 0.1})
    df = load_rows(path)
    table = threshold_table(df)
    assert list(table["threshold"]) == ["full mask", "0.10"]
    assert list(table["PSNR-Y (dB)"]) == ["31.00", "30.90"] and list(table["images"]) == ["2", "2"]
    assert table["patch density (%)"].iloc[1] == "40.00"
    per_image = threshold_table(df, per_image=True)
    assert len(per_image) == 4 and set(per_image["image"]) == {"a.png", "b.png"}
    assert list(per_image["threshold"][:2]) == ["full mask", "full mask"]


def test_window_patch_table_has_one_row_per_setting(tmp_path, results):
    path = tmp_path / "wp.jsonl"
    for patch, window, macs in ((8, 4, 2.9e12), (8, 8, 3.1e12), (8, 16, 3.6e12), (4, 8, 4.1e12)):
        append_result(path, _row(f"p{patch}w{window}", "qdm-b", 128, threshold=0.0, window=window, patch=patch,
                                 params=195.7e6, macs=macs / 15, macs_per_sr=macs, patch_density=0.5,
                                 active_windows=10, total_windows=64))
    table = window_patch_table(load_rows(path))
    assert list(zip(table["patch"], table["window"])) == [("4", "8"), ("8", "4"), ("8", "8"), ("8", "16")]
    assert list(table["TMACs/SR (15 steps)"]) == ["4.10", "2.90", "3.10", "3.60"]
    assert "\\toprule" in render(table, "latex_booktabs")
    assert window_patch_table(load_rows(results)).empty  # no ablation in the main fixture


# -- plots -------------------------------------------------------------------------------------------------------

def _written(paths):
    """True when the PNG and PDF were written and are not empty."""
    return [p.suffix for p in paths] == [".png", ".pdf"] and all(p.is_file() and p.stat().st_size > 0 for p in paths)


def test_plots_are_written_as_png_and_pdf(results, tmp_path):
    df = load_rows(results)
    assert _written(plot_figure5(df, 1024, tmp_path / "f5"))
    assert _written(plot_figure5(df, 128, tmp_path / "f5_128.png"))
    assert _written(plot_cost_vs_res(df, tmp_path / "cost"))
    assert _written(plot_threshold(df, tmp_path / "thr"))
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_figure5(df, 512, tmp_path / "none")


def test_quadtree_overlay_draws_masks_and_leaves(tmp_path):
    from qdm.quadtree import quadtree_decompose

    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = ((ys - 12) ** 2 + (xs - 10) ** 2 < 36).float()  # sharp edges inside some 4×4 blocks
    image = torch.stack([disc, disc * 0.8, 0.2 + 0.6 * xs / 31])
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:5, 1:3] = True
    leaves = quadtree_decompose(image * 2 - 1, 0.5, min_size=4)
    assert any(leaf.active for leaf in leaves) and not all(leaf.active for leaf in leaves)
    assert _written(plot_quadtree_overlay(image, mask, tmp_path / "mask", "mask"))
    assert _written(plot_quadtree_overlay(image, leaves, tmp_path / "leaves", "leaves"))
    assert _written(plot_quadtree_overlay(image, mask, tmp_path / "both", "both", leaves=leaves))
    with pytest.raises(ValueError, match="mask grid or a list"):
        plot_quadtree_overlay(image, None, tmp_path / "nothing")


# -- the report --------------------------------------------------------------------------------------------------

def test_write_report_links_every_file_and_states_provenance(results, tmp_path):
    out = tmp_path / "report"
    commands = ["qdm-bench run --res 128 --out results.jsonl"]
    index = write_report([results], out, title="Test report", commands=commands)
    text = index.read_text()
    links = set(re.findall(r"\]\(([^)]+)\)", text))
    written = {p.name for p in out.iterdir()} - {"index.md"}
    assert written == links
    assert {"figure5_128.md", "figure5_128.tex", "figure5_1024.png", "figure5_1024.pdf", "table5.tex",
            "threshold.md", "threshold.png", "cost_vs_res.pdf", "cells.md"} <= written
    assert "window_patch.md" not in written  # no ablation: no empty table
    assert all((out / name).stat().st_size > 0 for name in written)
    assert text.startswith("# Test report") and CPU in text and commands[0] in text
    assert "2.13.0+cpu" in text and "abc123" in text and "2026-11-20" in text
    assert "FLOPs = 2·MACs" in text and "lower bound" in text
    assert "CUDA out of memory" in text and "first try failed" not in text  # only the last row of a key


def test_write_report_without_commands_says_so(results, tmp_path):
    text = write_report(results, tmp_path / "r").read_text()
    assert "not recorded" in text.split("## Commands", 1)[1]


def test_bad_results_files_raise_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text('{"key": "a"}\nnot json\n{"key": "b"}\n')
    with pytest.raises(ResultsError, match="line 2"):
        write_report(corrupt, tmp_path / "out")
    with pytest.raises(ResultsError, match="does not exist"):
        write_report(tmp_path / "missing.jsonl", tmp_path / "out")
    failed = tmp_path / "failed.jsonl"
    append_result(failed, empty_row(key="x", model="unet", status="error", message="boom"))
    append_result(failed, empty_row(key="y", model="unet", status="oom", message="out of memory"))
    with pytest.raises(ValueError, match="no finished rows in"):
        write_report(failed, tmp_path / "out")
