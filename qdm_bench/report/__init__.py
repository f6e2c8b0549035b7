"""Reports from results files alone (no re-measurement): paper-style tables, plots and an index page.

Tables (:mod:`~qdm_bench.report.tables`) are pandas frames of display strings, rendered with tabulate as Markdown
(``github``) or LaTeX (``latex_booktabs``) by :func:`render`; they follow the QDM paper's layouts (spec ``docs/qdm.md`` §10):

* :func:`figure5_table` — Figure 5's comparison at one resolution (params, GMACs, peak memory, latency, img/s);
* :func:`table5` — configurations (parameters in both conventions, GMACs per resolution);
* :func:`threshold_table` — Tables 3/6 (threshold ablation, the full-mask row first);
* :func:`window_patch_table` — Table 4 (upstream patch × downstream window);
* :func:`failed_table` — cells that ended in ``oom`` / ``error``, with their message;
* :func:`pgs_table` — patch-adaptive group sampling rows.

Plots (:mod:`~qdm_bench.report.plots`, :mod:`~qdm_bench.report.overlays`) are matplotlib figures (Agg, no pyplot
state) saved as PNG and PDF, each with a caption line (devices and dates of the rows): :func:`plot_figure5`,
:func:`plot_cost_vs_res`, :func:`plot_threshold` and :func:`plot_quadtree_overlay`.  :func:`write_report`
(:mod:`~qdm_bench.report.index`) writes everything the data supports and an ``index.md``.

Estimated peak memory (a meta-device trace, ``mem_estimated``) is never shown in a measured column or as a plain
bar: it has its own column, marked ``(est.)``, and hatched bars.
"""
from qdm_bench.report.frames import FORMATS, MAC_CONVENTION, MEMORY_NOTE, PAPER_TABLE5_PARAMS_M, QUALITY
from qdm_bench.report.index import load_rows, write_report
from qdm_bench.report.overlays import plot_overlays, plot_quadtree_overlay
from qdm_bench.report.plots import plot_cost_vs_res, plot_figure5, plot_threshold
from qdm_bench.report.tables import (
    failed_table,
    figure5_table,
    pgs_table,
    render,
    table5,
    threshold_table,
    window_patch_table,
)

__all__ = [
    "FORMATS", "QUALITY", "MAC_CONVENTION", "MEMORY_NOTE", "PAPER_TABLE5_PARAMS_M", "load_rows", "render",
    "figure5_table", "table5", "threshold_table", "window_patch_table", "failed_table", "pgs_table", "plot_figure5",
    "plot_cost_vs_res", "plot_threshold", "plot_quadtree_overlay", "plot_overlays", "write_report",
]
