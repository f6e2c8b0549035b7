"""Paper-ready tables: LaTeX that compiles as it is, tables split by purpose, CSV export, and committed reports that
cannot go stale (re-rendering them from their results files reproduces every table byte for byte)."""
import csv
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from qdm_bench.measure.results import append_result, empty_row
from qdm_bench.report import (
    figure5_table, latex_escape, load_rows, quality_per_image, quality_summary, recorded_commands,
    table5, write_report,
)
from qdm_bench.report.latex import numeric_columns

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
CPU = "Test CPU"


def _key(model, res, **options):
    """A cell key as the measurement core writes it (architecture options null unless set)."""
    d = {"model": model, "height": res, "width": res, "batch": 1, "window": None, "patch": None, "chunk_size": None,
         "version": "0.1.0", **options}
    return json.dumps(d, sort_keys=True)


def _row(model, res, **values):
    base = {"model": model, "family": model.split("-")[0], "height": res, "width": res, "batch": 1, "dtype": "fp32",
            "device": "cpu", "device_name": CPU, "threads": 1, "num_steps": 15, "status": "ok",
            "timestamp": "2026-12-01T10:00:00+00:00"}
    return empty_row(**{**base, **values})


@pytest.fixture
def ablation(tmp_path):
    """A default QDM-B cell, its window ablation (one of them equal to the default), a DiT and a U-Net."""
    path = tmp_path / "ablation.jsonl"
    append_result(path, _row("qdm-b", 128, key=_key("qdm-b", 128), window=8, patch=8, params=195.7e6, macs=344.6e9,
                             peak_mem_bytes=300 * 2**20, mem_estimated=False, command="qdm-bench run"))
    for window, macs in ((4, 342.8e9), (8, 344.6e9), (16, 351.8e9)):
        append_result(path, _row("qdm-b", 128, key=_key("qdm-b", 128, window=window), window=window, patch=8,
                                 params=195.7e6, macs=macs, command="qdm-bench ablate window"))
    append_result(path, _row("unet", 128, key=_key("unet", 128), params=116e6, macs=361.9e9, command="qdm-bench run"))
    append_result(path, _row("dit-s/8", 128, key=_key("dit-s/8", 128), patch=8, params=32.7e6, macs=6.1e9,
                             command="qdm-bench run"))
    return path


def test_figure5_and_table5_show_default_configurations_only(ablation):
    df = load_rows(ablation)
    f5, t5 = figure5_table(df, 128), table5(df)
    assert list(f5["model"]) == ["qdm-b", "dit-s/8", "unet"]  # Figure 5's family order, ablation rows left out
    assert list(f5["GMACs"]) == ["344.6", "6.1", "361.9"]
    assert list(t5["model"]) == ["qdm-b", "dit-s/8", "unet"] and list(t5["window"]) == ["8", "", ""]


def test_latex_escape_writes_ascii_latex():
    assert latex_escape("a_b 50% & #1 {x} ~ ^") == r"a\_b 50\% \& \#1 \{x\} \textasciitilde{} \textasciicircum{}"
    assert latex_escape("M×N (t₀ 3) p10–p90 σ=1.5") == r"M$\times$N (t$_0$ 3) p10--p90 $\sigma$=1.5"
    assert latex_escape("peak memory† (MiB)") == r"peak memory\textsuperscript{\dag} (MiB)"
    assert latex_escape("Café ☃") == "Cafe ?"  # no LaTeX form: the ASCII decomposition, else ?


def test_numeric_columns_are_recognised():
    import pandas as pd

    t = pd.DataFrame({"model": ["a", "b"], "n": ["1,234.5", ""], "m": ["846†", "-0.50"], "w": ["56.5 / 64", "1"],
                      "e": ["", ""]})
    assert numeric_columns(t) == [False, True, True, False, False]


def _tabular_rows(tex):
    """(column spec, [cells of each row]) of the tabular in ``tex``."""
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1)
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    header = tex.split("\\toprule", 1)[1].split("\\midrule", 1)[0]
    rows = [r for r in (header + body).split("\\\\") if r.strip()]
    return spec, [re.split(r"(?<!\\)&", r) for r in rows]


def _check_latex(tex):
    """The structural checks a TeX engine would make on our floats, and no raw non-ASCII."""
    assert tex.isascii(), [c for c in tex if not c.isascii()][:5]
    assert tex.count("{") - tex.count("\\{") == tex.count("}") - tex.count("\\}")
    assert "\\begin{table}" in tex and "\\end{table}" in tex and "\\label{tab:" in tex and "\\caption{" in tex
    spec, rows = _tabular_rows(tex)
    assert all(len(r) == len(spec) for r in rows), (spec, [len(r) for r in rows])
    text = "\n".join(ln for ln in tex.splitlines() if not ln.startswith(("%", "\\label{")))
    text = re.sub(r"(?<!\\)\$[^$]*\$", "", text)  # math mode may hold _ and ^
    assert not re.search(r"(?<!\\)[%#_^~$]", text), re.search(r".{20}(?<!\\)[%#_^~$].{20}", text)
    return spec, rows


def test_every_written_latex_table_is_a_complete_ascii_float(ablation, tmp_path):
    write_report([ablation], tmp_path / "rep")
    texs = sorted((tmp_path / "rep").glob("*.tex"))
    assert {p.name for p in texs} >= {"figure5_128.tex", "table5.tex", "cells.tex"}
    for tex in texs:
        spec, rows = _check_latex(tex.read_text())
        if tex.name == "figure5_128.tex":
            heads = [c.strip() for c in rows[0]]
            assert spec[0] == "l" and all(spec[heads.index(h)] == "r" for h in ("params (M)", "GMACs"))


def test_latex_compiles_when_a_tex_engine_is_installed(ablation, tmp_path):
    engine = shutil.which("pdflatex")
    if engine is None:
        pytest.skip("no pdflatex here; test_every_written_latex_table_is_a_complete_ascii_float checks the structure")
    write_report([ablation], tmp_path)
    body = "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.tex")))
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + body
                   + "\n\\end{document}\n")
    done = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]


def test_quality_tables_long_format_and_summary(tmp_path):
    path = tmp_path / "q.jsonl"
    scores = {("a.png", None): 30.0, ("b.png", None): 32.0, ("a.png", 0.15): 29.5, ("b.png", 0.15): 31.0}
    for (image, s), psnr in scores.items():
        append_result(path, _row("qdm-t", 256, key=_key("qdm-t", 256, image=image, threshold=s), image=image,
                                 threshold=s, psnr=psnr, ssim=0.9, bicubic_psnr=28.0, bicubic_ssim=0.8,
                                 patch_density=1.0 if s is None else 0.3, macs_per_sr=1e12))
    df = load_rows(path)
    long = quality_per_image(df)
    assert len(long) == 4 * 4  # 4 cells x (PSNR-Y, SSIM-Y, bicubic PSNR-Y, bicubic SSIM-Y)
    assert set(long.columns) >= {"model", "mask", "image", "metric", "value"}
    psnr = long[long["metric"] == "PSNR-Y (dB)"]
    assert sorted(psnr["value"]) == sorted(f"{v:.2f}" for v in scores.values())
    summary = quality_summary(df)
    assert list(summary["mask"]) == ["full mask", "0.15"]
    assert list(summary["PSNR-Y (dB)"]) == ["31.00", "30.25"]
    assert list(summary["gain over bicubic (dB)"]) == ["+3.00", "+2.25"] and list(summary["images"]) == ["2", "2"]


def test_report_csv_exports_raw_rows_and_every_table(ablation, tmp_path):
    out = tmp_path / "rep"
    write_report([ablation], out, csv=True)
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {r["model"] for r in rows} == {"qdm-b", "unet", "dit-s/8"}
    assert {float(r["macs"]) for r in rows} >= {344.6e9, 342.8e9, 351.8e9, 361.9e9, 6.1e9}  # raw values, not GMACs
    with open(out / "figure5_128.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["model"] for r in table] == ["qdm-b", "dit-s/8", "unet"]
    assert "Files: [figure5_128.md](figure5_128.md) · [figure5_128.tex](figure5_128.tex) · [figure5_128.csv]" in (
        out / "index.md").read_text()


def test_index_names_commands_whose_rows_a_later_run_superseded(tmp_path):
    path = tmp_path / "r.jsonl"
    key = _key("unet", 1024)
    append_result(path, _row("unet", 1024, key=key, macs=1e12, command="qdm-bench memory --res 1024"))
    append_result(path, _row("unet", 1024, key=key, macs=1e12, command="qdm-bench ablate res"))
    assert recorded_commands([path]) == ["qdm-bench memory --res 1024", "qdm-bench ablate res"]
    text = write_report([path], tmp_path / "rep").read_text()
    assert "qdm-bench memory --res 1024" in text and "qdm-bench ablate res" in text


def test_cli_report_csv_flag(ablation, tmp_path):
    from click.testing import CliRunner

    from qdm_bench.cli.main import main as cli

    res = CliRunner().invoke(cli, ["report", str(ablation), "--out-dir", str(tmp_path / "rep"), "--csv"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "results.csv").is_file() and (tmp_path / "rep" / "table5.csv").is_file()


# -- the committed reports cannot go stale -----------------------------------------------------------------------

def _report_invocations():
    """(folder to run in, report arguments) of every ``qdm-bench report`` line in the committed reports'
    commands.sh whose results files are committed (``$OUT`` is the script's own folder)."""
    out = []
    for script in sorted(REPORTS.glob("*/commands.sh")):
        text = script.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("qdm-bench report "):
                continue
            uses_out = "$OUT" in line
            where = ROOT if uses_out else script.parent
            args = [a.replace("$OUT", str(script.parent.relative_to(ROOT))) for a in shlex.split(line)[2:]]
            results = [a for a in args if a.endswith(".jsonl")]
            if results and all((where / r).is_file() for r in results):
                out.append(pytest.param(where, args, id=script.parent.name))
    return out


@pytest.mark.parametrize("where, args", _report_invocations())
def test_committed_report_is_what_its_results_render_to(where, args, tmp_path, monkeypatch):
    """Re-rendering a committed report from its results files gives its tables (.md, .tex) byte for byte."""
    from click.testing import CliRunner

    from qdm_bench.cli.main import main as cli

    monkeypatch.chdir(where)
    i = args.index("--out-dir")
    committed = (where / args[i + 1]).resolve()
    args = [*args[:i + 1], str(tmp_path), *args[i + 2:]]
    res = CliRunner().invoke(cli, ["report", *args])
    assert res.exit_code == 0, res.output
    fresh = sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".md", ".tex", ".csv"))
    assert len(fresh) > 2, "the report wrote no tables"
    stale = [name for name in fresh if not (committed / name).is_file()
             or (committed / name).read_text() != (tmp_path / name).read_text()]
    assert not stale, (f"{committed.name}: {stale} differ from a fresh render; re-run its commands.sh (or its "
                       "`qdm-bench report` line) and commit the result")
