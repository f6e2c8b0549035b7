"""Ablation sweeps (paper Tables 3, 4, 6 and the cost-vs-resolution curve) as lists of measurement cells.

Every sweep is a list of :class:`qdm_bench.measure.cell.Cell`, run by :func:`qdm_bench.measure.runner.run_cells`
(isolated, resumable, one results file), so ablations and plain measurements share one format and one report
renderer.
"""
from __future__ import annotations

from typing import Sequence

from qdm_bench.measure.cell import Cell
from qdm_bench.errors import ConfigError
from qdm_bench.measure.sweep import make_cells
from qdm_bench.registry import resolve

__all__ = ["DEFAULT_THRESHOLDS", "threshold_cells", "window_cells", "patch_cells", "res_cells", "DEFAULT_RES"]

DEFAULT_THRESHOLDS = (0.0, 0.03, 0.06, 0.09, 0.15, 0.3, 0.6, 0.9)  # Tables 3 and 6
DEFAULT_RES = (256, 512, 1024, 2048)


def _require_qdm(model: str) -> None:
    info = resolve(model)
    if not info.uses_mask:
        raise ConfigError(f"{model} does not use a quadtree mask; threshold/window/patch ablations need a QDM model "
                         "such as qdm-s, qdm-b or qdm-l")


def threshold_cells(model: str, images: Sequence[str], res: tuple[int, int], thresholds: Sequence[float],
                    metrics: Sequence[str], posterior: str | None = None, **cell_kwargs) -> list[Cell]:
    """Per image: the full-mask (dense) cell first, then one cell per threshold (mask from that image's LR).

    ``posterior`` (quality cells) is the reverse-step form of the masked cells; the full mask, where both forms
    coincide, gets none.
    """
    _require_qdm(model)
    cells: list[Cell] = []
    for image in images:
        cells += make_cells([model], [res], metrics=metrics, image=image, **cell_kwargs)  # full mask
        cells += make_cells([model], [res], thresholds=list(thresholds), metrics=metrics, image=image,
                            posterior=posterior, **cell_kwargs)
    return cells


def _size_cells(model: str, res: tuple[int, int], option: str, values: Sequence[int], metrics: Sequence[str],
                **cell_kwargs) -> list[Cell]:
    """One cell per value of a QDM size option (``window`` or ``patch``), dense unless a threshold/density is given."""
    _require_qdm(model)
    return [cell for v in values for cell in make_cells([model], [res], metrics=metrics, **{option: v}, **cell_kwargs)]


def window_cells(model: str, res: tuple[int, int], windows: Sequence[int], metrics: Sequence[str],
                 **cell_kwargs) -> list[Cell]:
    """One cell per downstream window size (Table 4)."""
    return _size_cells(model, res, "window", windows, metrics, **cell_kwargs)


def patch_cells(model: str, res: tuple[int, int], patches: Sequence[int], metrics: Sequence[str],
                **cell_kwargs) -> list[Cell]:
    """One cell per upstream patch size (Table 4)."""
    return _size_cells(model, res, "patch", patches, metrics, **cell_kwargs)


def res_cells(models: Sequence[str], resolutions: Sequence[tuple[int, int]], metrics: Sequence[str],
              **cell_kwargs) -> list[Cell]:
    """Every model at every resolution (the scaling curve behind Figure 5)."""
    return make_cells(models, resolutions, metrics=metrics, **cell_kwargs)
