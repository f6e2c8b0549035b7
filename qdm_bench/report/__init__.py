"""Reports from results files alone (no re-measurement): paper-style tables, plots and an index page.

Tables (:mod:`~qdm_bench.report.tables`) are pandas frames of display strings with a caption and footnotes in
``attrs``, rendered as Markdown (numeric columns right-aligned) or as a captioned, labelled LaTeX booktabs float by
:mod:`~qdm_bench.report.latex`; they follow the QDM paper's layouts (``docs/qdm.md`` §10):

* :func:`figure5_table` — Figure 5's comparison at one resolution (params, GMACs, peak memory, latency, img/s);
* :func:`table5` — configurations (parameters in both conventions, GMACs per resolution);
* :func:`threshold_table` — Tables 3/6 (threshold ablation, the full-mask row first);
* :func:`window_patch_table` — Table 4 (upstream patch × downstream window);
* :func:`failed_table` — cells that ended in ``oom`` / ``error``, with their message;
* :func:`pgs_table` — patch-adaptive group sampling rows;
* :func:`quality_summary`, :func:`quality_per_image` — mean scores per setting, and every score in a long format.

Figure 5 and Table 5 show each model's default configuration only; window and patch ablations are Table 4.

Plots (:mod:`~qdm_bench.report.plots`, :mod:`~qdm_bench.report.overlays`) are matplotlib figures (Agg, no pyplot
state) saved as PNG and PDF, each with a caption line (devices and dates of the rows): :func:`plot_figure5`,
:func:`plot_cost_vs_res`, :func:`plot_threshold`, :func:`plot_pareto` and :func:`plot_quadtree_overlay`.  :func:`write_report`
(:mod:`~qdm_bench.report.index`) writes everything the data supports and an ``index.md``.

Estimated peak memory (a meta-device trace, ``mem_estimated``) is never shown in a measured column or as a plain
bar: it has its own column, marked with a footnote symbol (†), and hatched bars.
"""
import importlib
from typing import Any

_WHERE = {  # public name -> submodule (imported on first use: `qdm_bench.report.summary` needs no matplotlib)
    **dict.fromkeys(("FORMATS", "MAC_CONVENTION", "MEMORY_NOTE", "PAPER_TABLE5_PARAMS_M", "QUALITY"), "frames"),
    **dict.fromkeys(("load_rows", "write_report", "write_csv", "recorded_commands"), "index"),
    **dict.fromkeys(("plot_overlays", "plot_quadtree_overlay"), "overlays"),
    **dict.fromkeys(("plot_cost_vs_res", "plot_figure5", "plot_threshold", "plot_pareto"), "plots"),
    **dict.fromkeys(("failed_table", "figure5_table", "pgs_table", "render", "table5", "threshold_table",
                     "window_patch_table"), "tables"),
    **dict.fromkeys(("quality_per_image", "quality_summary"), "quality_tables"),
    **dict.fromkeys(("render_latex", "render_markdown", "latex_escape"), "latex"),
}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    """The public names, imported from their submodule on first use."""
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
