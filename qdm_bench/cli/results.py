"""``qdm-bench report`` and ``qdm-bench compare``: reports and regression checks from results files."""
from __future__ import annotations

import click

from qdm_bench.cli.options import renamed


# -- reports -----------------------------------------------------------------------------------------------------

EPILOG_REPORT = """\b
Examples:
  qdm-bench report results/run.jsonl --out-dir reports/my-run
  qdm-bench report results/memory.jsonl results/ablate-threshold.jsonl --out-dir reports/cpu --title "CPU reference"
"""


@click.command(epilog=EPILOG_REPORT)
@renamed("--out", "-o", to="out_dir", new_flag="--out-dir", type=click.Path(file_okay=False))
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out-dir", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Report folder (created): tables (.md, .tex), plots (.png, .pdf) and index.md.")
@click.option("--title", default=None, help="Report title.")
@click.option("--models", "-m", "models", multiple=True, metavar="GLOBS",
              help="Only rows of these models (names or wildcards, comma-separated; repeatable). Default: all.")
@click.option("--command", "commands", multiple=True,
              help="Command(s) that produced the results, for index.md (default: those recorded in the rows).")
@click.option("--csv", "csv", is_flag=True,
              help="Also write every table as CSV and all rows with every column (raw values) as results.csv.")
def report(results, out_dir, title, models, commands, csv) -> None:
    """Render tables and figures from results files alone (no re-measurement).

    Paper-style tables (Figure-5 costs, Table 5 configurations, Tables 3/6 threshold sweeps, Table 4 window/patch,
    quality summary and per image) in Markdown and LaTeX (captioned booktabs floats), Figure-5-style,
    cost-vs-resolution, threshold and quality-vs-MACs plots, and an index.md stating devices, software versions
    and the commands that produced the results.  Re-rendering the same files reproduces every table exactly.
    """
    from qdm_bench.report import write_report

    if out_dir is None:
        raise click.UsageError("give the report folder: --out-dir DIR")

    index = write_report(list(results), out_dir, title=title, commands=list(commands) or None,
                         models=_patterns(models), csv=csv)
    click.echo(f"report written: {index}")


# -- regression tracking -------------------------------------------------------------------------------------------

class _Finite(click.ParamType):
    """A finite float (nan and inf are refused: a tolerance must be a number)."""

    name = "float"

    def convert(self, value, param, ctx):
        import math

        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or number < 0:
            self.fail(f"{value!r} is not a finite number >= 0", param, ctx)
        return number


_FINITE = _Finite()

EPILOG_COMPARE = """\b
Examples:
  qdm-bench compare reports/baseline/run.jsonl results/run.jsonl
  qdm-bench compare old.jsonl new.jsonl --time-tol 1.5 --all
Exit status: 0 when nothing regressed, 1 on a regression or a missing cell.
"""


@click.command(epilog=EPILOG_COMPARE)
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--time-tol", type=_FINITE, default=2.0, show_default=True,
              help="Absolute median latency may grow up to this factor (same device and threads only).")
@click.option("--ratio-tol", type=_FINITE, default=0.25, show_default=True,
              help="In-run QDM sparse/dense latency ratio may grow by this fraction.")
@click.option("--memory-tol", type=_FINITE, default=1.5, show_default=True,
              help="Measured peak memory may grow up to this factor.")
@click.option("--psnr-tol", type=_FINITE, default=0.1, show_default=True, help="Allowed PSNR drop, dB.")
@click.option("--allow-missing", is_flag=True, help="Cells of the baseline absent from NEW are not a failure.")
@click.option("--models", "-m", "models", multiple=True, metavar="GLOBS",
              help="Compare only the cells of these models (names or wildcards, comma-separated). Default: all.")
@click.option("--all", "show_all", is_flag=True, help="Show every comparison, not only what changed.")
@click.option("--format", "fmt", type=click.Choice(["simple", "github"]), default="simple", show_default=True)
def compare(baseline, new, time_tol, ratio_tol, memory_tol, psnr_tol, allow_missing, models, show_all, fmt) -> None:
    """Compare two results files cell by cell; exit non-zero on a regression.

    Parameters and MACs must match exactly; measured memory and absolute latency within generous factors on the
    same device; the QDM sparse/dense latency ratio of each run within --ratio-tol; quality within tolerances.
    """
    from tabulate import tabulate

    from qdm_bench.compare import Tolerances, compare_files, human

    for name, value in (("--time-tol", time_tol), ("--memory-tol", memory_tol)):
        if value < 1:
            raise click.BadParameter("must be at least 1 (a factor)", param_hint=name)
    tol = Tolerances(time_ratio=time_tol, speed_ratio=ratio_tol, memory_ratio=memory_tol, psnr_db=psnr_tol)
    findings = compare_files(baseline, new, tol, allow_missing, models=_patterns(models))
    shown = [f for f in findings if show_all or f.verdict != "ok"]
    if shown:
        click.echo(tabulate([[f.cell, f.metric, human(f.metric, f.baseline), human(f.metric, f.new), f.verdict, f.note]
                             for f in shown],
                            headers=["cell", "metric", "baseline", "new", "verdict", "note"], tablefmt=fmt,
                            disable_numparse=True))
    failed = [f for f in findings if f.failed]
    counts = {v: sum(f.verdict == v for f in findings) for v in ("ok", "improved", "skipped", "added")}
    summary = (f"{len(findings)} comparisons: {counts['ok']} ok, {len(failed)} regressed or missing, "
               f"{counts['improved']} improved, {counts['skipped']} skipped, {counts['added']} new cells")
    if failed:
        click.echo(summary, err=True)
        first = failed[0]
        raise click.ClickException(f"{len(failed)} regression(s) against {baseline}, e.g. {first.cell}: "
                                   f"{first.metric} {human(first.metric, first.baseline)} -> "
                                   f"{human(first.metric, first.new)}")
    click.echo(summary)



def _patterns(values: tuple[str, ...]) -> list[str] | None:
    """-m/--models of report and compare: shell-style patterns, comma-separated and repeatable."""
    pats = [p.strip() for v in values for p in v.split(",") if p.strip()]
    return pats or None
