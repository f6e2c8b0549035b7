"""The report as a whole: loading results files, provenance, and :func:`write_report` with its ``index.md``."""
from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from qdm_bench.errors import ResultsError
from qdm_bench.measure.results import COLUMNS, read_results
from qdm_bench.report.frames import (
    FORMATS, MAC_CONVENTION, MEMORY_NOTE, NUMERIC, QUALITY, _dense, _models_frame, _ok, _threshold_frame,
)
from qdm_bench.report.latex import latex_escape, render_latex, render_markdown
from qdm_bench.report.quality_tables import quality_per_image, quality_summary
from qdm_bench.report.overlays import plot_overlays
from qdm_bench.report.plot_tradeoffs import _pareto_frame
from qdm_bench.report.plots import plot_cost_vs_res, plot_figure5, plot_pareto, plot_threshold
from qdm_bench.report.tables import (
    ESTIMATE, failed_table, figure5_table, pgs_table, render, table5, threshold_table, window_patch_table,
)


def load_rows(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """All rows of the results files (every schema column, plus extras), the last row kept per repeated cell key."""
    df = pd.DataFrame(read_results(paths))
    df = df.reindex(columns=COLUMNS + [c for c in df.columns if c not in COLUMNS])
    df = df[df["key"].isna() | ~df.duplicated("key", keep="last")].reset_index(drop=True)
    for col in [c for c in (*NUMERIC, "image_size", "scale", *QUALITY) if c in df.columns]:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _slug(res: tuple[int, int]) -> str:
    """File-name resolution: ``1024`` (square) or ``512x768``."""
    return str(res[0]) if res[0] == res[1] else f"{res[0]}x{res[1]}"


def _write_table(table: pd.DataFrame, out_dir: Path, name: str, title: str, csv: bool = False) -> list[Path]:
    """``name.md`` (Markdown), ``name.tex`` (a LaTeX float; needs booktabs) and with ``csv`` ``name.csv``."""
    md, tex = out_dir / f"{name}.md", out_dir / f"{name}.tex"
    caption = table.attrs.get("caption", "")
    md.write_text(f"# {title}\n\n" + (f"{caption}\n\n" if caption else "") + f"{render_markdown(table)}\n",
                  encoding="utf-8")
    tex.write_text(f"% qdm-bench: {latex_escape(title)} (needs \\usepackage{{booktabs}})\n"
                   f"{render_latex(table, f'tab:{name}')}\n", encoding="utf-8")
    if not csv:
        return [md, tex]
    path = out_dir / f"{name}.csv"
    table.to_csv(path, index=False, lineterminator="\n")
    return [md, tex, path]


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
             "* rendered from the results files alone (no re-measurement); re-rendering reproduces every table", "",
             "## Conventions", "", f"* {MAC_CONVENTION}", f"* {MEMORY_NOTE}",
             "* Paper figures appear only in columns labelled with the paper as their source.", "",
             "## Commands", ""]
    lines += ["```", *commands, "```"] if commands else ["not recorded"]
    return lines + [""]


def _tables(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(file name, title, display table) for every table the data supports."""
    out = []
    dense = _models_frame(df)
    pairs = dense[["height", "width"]].dropna().drop_duplicates() if not dense.empty else pd.DataFrame()
    for h, w in sorted(map(tuple, pairs.astype(int).to_numpy()), key=lambda p: p[0] * p[1]):
        out.append((f"figure5_{_slug((h, w))}", f"Figure 5 comparison at {h}x{w}", figure5_table(df, (h, w))))
    out.append(("table5", "Configurations (Table 5 layout)", table5(df)))
    out.append(("threshold", "Threshold ablation (Tables 3/6 layout)", threshold_table(df)))
    if "image" in df.columns and df["image"].nunique() > 1:
        out.append(("threshold_per_image", "Threshold ablation per image", threshold_table(df, per_image=True)))
    out.append(("window_patch", "Upstream patch and downstream window (Table 4 layout)", window_patch_table(df)))
    out.append(("quality_summary", "Quality summary (means over images)", quality_summary(df)))
    out.append(("quality_per_image", "Quality per image (long format)", quality_per_image(df)))
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
    if not _pareto_frame(df).empty:
        out.append(("Quality vs compute (Pareto front)", plot_pareto(df, out_dir / "pareto")))
    return out


def _matches(model: Any, patterns: Sequence[str] | None) -> bool:
    """Whether a row's model matches one of the shell-style ``patterns`` (all rows when there are none)."""
    return not patterns or any(fnmatch.fnmatchcase(str(model), p) for p in patterns)


def recorded_commands(paths: Sequence[str | Path], models: Sequence[str] | None = None) -> list[str]:
    """The distinct commands recorded in the rows of the results files, in order of first appearance.

    Read from every stored row, before repeated cell keys are collapsed: a command whose rows were all superseded by
    a later run of the same cells (e.g. ``memory --res 1024`` and ``ablate res``) still produced an input.
    """
    rows = read_results(paths)
    return list(dict.fromkeys(str(r["command"]) for r in rows if r.get("command") and _matches(r.get("model"), models)))


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Every row (one per cell, after de-duplication) with every column, raw values (bytes, MACs, ms), as CSV."""
    flat = df.map(lambda v: "" if v is None else (",".join(map(str, v)) if isinstance(v, (list, tuple)) else v))
    flat.dropna(axis=1, how="all").to_csv(path, index=False, lineterminator="\n")
    return path


def write_report(results_paths: str | Path | Iterable[str | Path], out_dir: str | Path, title: str | None = None,
                 commands: list[str] | None = None, models: Sequence[str] | None = None, csv: bool = False) -> Path:
    """Write every supported table (Markdown + LaTeX), plot (PNG + PDF) and an ``index.md``; returns its path.

    ``models``: shell-style patterns; only rows of matching models are reported.  ``commands``: the commands that
    produced the results (default: those recorded in the rows).  ``csv``: also write every table as CSV and all
    rows, raw, as ``results.csv``.
    """
    from qdm_bench.report.summary import summary_rows, summary_table

    paths = [Path(results_paths)] if isinstance(results_paths, (str, Path)) else [Path(p) for p in results_paths]
    df = load_rows(paths)
    if models:
        df = df[[_matches(m, models) for m in df["model"]]].reset_index(drop=True)
    if _ok(df).empty and pgs_table(df).empty:
        raise ResultsError(f"no finished rows in {', '.join(map(str, paths))} (no row with status ok and a model); "
                         "see the message column of the results file, fix the cause and re-run the measurement")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if commands is None:
        commands = recorded_commands(paths, models)
    lines = [f"# {title or 'qdm-bench report'}", ""] + _provenance(df, paths, commands)
    if csv:
        write_csv(df, out / "results.csv")
        lines += ["All rows with every column, raw values: [results.csv](results.csv)", ""]
    for name, heading, table in _tables(df):
        files = _write_table(table, out, name, heading, csv)
        caption = table.attrs.get("caption", "")
        lines += [f"## {heading}", ""] + ([caption, ""] if caption else []) + [render_markdown(table), "",
                  "Files: " + " · ".join(f"[{p.name}]({p.name})" for p in files), ""]
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
               if "patch_evals" not in r and _matches(r.get("model"), models)]  # cell rows as stored (PGS rows have their own table)
    md, tex = out / "cells.md", out / "cells.tex"
    md.write_text("# All cells\n\n" + summary_table(records, tablefmt=FORMATS["md"]) + "\n", encoding="utf-8")
    headers, cells = summary_rows(records, mark="†")
    every = pd.DataFrame([[("" if v is None else str(v)) for v in row] for row in cells], columns=headers)
    every.attrs["notes"] = [ESTIMATE] if any("†" in str(v) for row in cells for v in row) else []
    tex.write_text("% qdm-bench: all cells (needs \\usepackage{booktabs})\n"
                   + render_latex(every, "tab:cells", "Every cell of the results files.") + "\n", encoding="utf-8")
    lines += ["## All cells", "", f"Every row of the results files: [{md.name}]({md.name}) · [{tex.name}]({tex.name})",
              ""]
    failed = failed_table(df)
    if not failed.empty:
        lines += ["## Cells without results (oom / error / skipped)", "", render(failed), ""]
    index = out / "index.md"
    index.write_text("\n".join(lines), encoding="utf-8")
    return index
