"""Figure-3-style quadtree overlays: mask cells and quadtree leaves drawn over an image."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from qdm_bench.report.frames import _ok
from qdm_bench.report.plots import _save


def _image_array(image: Any) -> np.ndarray:
    """A (3, H, W) / (1, 3, H, W) / (1, H, W) tensor in [0, 1] as an (H, W, 3) array."""
    import torch

    img = torch.as_tensor(image).detach().float().cpu()
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"image must be a (3, H, W) tensor in [0, 1], got shape {tuple(img.shape)}")
    return img.expand(3, -1, -1).clamp(0, 1).permute(1, 2, 0).numpy()


def _draw_mask(ax: Any, mask: Any, h: int, w: int) -> str:
    """Tint and outline the active cells of a mask grid over an h×w image; returns a caption fragment."""
    import torch

    m = torch.as_tensor(mask).detach().cpu().bool()
    while m.dim() > 2 and m.shape[0] == 1:
        m = m[0]
    if m.dim() != 2:
        raise ValueError(f"mask must be an (H', W') grid, got shape {tuple(m.shape)}")
    grid = m.numpy()
    ch, cw = h / grid.shape[0], w / grid.shape[1]
    tint = np.zeros(grid.shape + (4,))
    tint[grid] = (1.0, 0.15, 0.1, 0.35)
    ax.imshow(tint, extent=(0, w, h, 0), interpolation="nearest")
    ys, xs = np.nonzero(grid)
    ax.add_collection(PatchCollection([Rectangle((x * cw, y * ch), cw, ch) for y, x in zip(ys, xs)],
                                      facecolor="none", edgecolor="red", linewidth=0.6, zorder=3))
    return f"active cells {grid.sum()} / {grid.size} ({100 * grid.mean():.1f} %), cell {cw:g}×{ch:g} px"


def _draw_leaves(ax: Any, leaves: Sequence[Any], tint: bool) -> str:
    """Outline quadtree leaves (active ones in red, tinted when no mask is drawn); returns a caption fragment."""
    active = [leaf for leaf in leaves if leaf.active]
    inactive = [leaf for leaf in leaves if not leaf.active]
    ax.add_collection(PatchCollection([Rectangle((lf.x, lf.y), lf.w, lf.h) for lf in inactive], facecolor="none",
                                      edgecolor="yellow", linewidth=0.5))
    ax.add_collection(PatchCollection([Rectangle((lf.x, lf.y), lf.w, lf.h) for lf in active],
                                      facecolor=(1.0, 0.15, 0.1, 0.35) if tint else "none", edgecolor="red",
                                      linewidth=0.5))
    return f"quadtree leaves {len(leaves)} ({len(active)} active)"


def plot_quadtree_overlay(image: Any, mask: Any, out: str | Path, title: str = "",
                          leaves: Sequence[Any] | None = None) -> list[Path]:
    """The image with active mask cells tinted and outlined, and/or quadtree leaf rectangles (Figure 3 style).

    ``mask`` is an (H', W') bool grid over the image, a list of :class:`qdm.quadtree.QuadLeaf` (then drawn as
    leaves), or None when ``leaves`` are given; leaves are in the image's pixel coordinates.
    """
    if mask is not None and isinstance(mask, (list, tuple)):
        mask, leaves = None, list(mask) + list(leaves or [])
    if mask is None and not leaves:
        raise ValueError("give a mask grid or a list of quadtree leaves to draw")
    arr = _image_array(image)
    h, w = arr.shape[:2]
    fig = Figure(figsize=(6.0, 6.0 * h / w + 0.8))
    ax = fig.subplots()
    ax.imshow(arr, extent=(0, w, h, 0), interpolation="nearest")
    parts = [_draw_mask(ax, mask, h, w)] if mask is not None else []
    if leaves:
        parts.append(_draw_leaves(ax, leaves, tint=mask is None))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(title or "Quadtree mask")
    return _save(fig, out, f"{w}×{h} image · " + "; ".join(parts))


def plot_overlays(df: pd.DataFrame, out: Path, max_images: int = 4,
                  target: float = 0.15) -> list[tuple[str, list[Path]]]:
    """Figure-3-style overlays for up to ``max_images`` swept images, at the stored threshold nearest ``target``."""
    import torch

    from qdm.quadtree import quadtree_decompose
    from qdm_bench.measure.cell import Cell
    from qdm_bench.measure.inputs import cell_image, cell_lr_image, cell_mask
    from qdm_bench.registry import ModelError, create_model, resolve

    if "image" not in df.columns or "threshold" not in df.columns:
        return []
    rows = _ok(df)
    rows = rows[rows["image"].notna() & rows["threshold"].notna()]
    written = []
    for key in list(dict.fromkeys(rows["image"]))[:max_images]:
        sub = rows[rows["image"] == key]
        r = sub.iloc[(sub["threshold"] - target).abs().argmin()]
        optional = {k: int(r[k]) for k in ("image_size", "scale", "window", "patch") if k in r and not pd.isna(r[k])}
        cell = Cell.create(str(r["model"]), int(r["height"]), int(r["width"]), image=str(key),
                           threshold=float(r["threshold"]), **optional)
        try:  # the mask exactly as the measured cell computed it
            img = cell_image(cell)
            with torch.device("meta"):
                model = create_model(cell.model.name, **resolve(cell.model.name).option_kwargs(dict(cell.model.options)))
            if not hasattr(model, "plan"):
                continue  # a threshold on a model without masks draws nothing
            mask = cell_mask(cell, model, img)[0]
        except (ValueError, FileNotFoundError, ModelError):
            continue  # an image or model no longer available here is simply not drawn
        lr, s, scale = cell_lr_image(cell, img)[0], cell.mask.threshold, cell.input.scale
        h, w = lr.shape[-2:]
        leaves = None
        if h == w and h & (h - 1) == 0:  # the recursive decomposition needs a power-of-two square
            leaves = [dataclasses.replace(leaf, y=leaf.y * scale, x=leaf.x * scale, h=leaf.h * scale, w=leaf.w * scale)
                      for leaf in quadtree_decompose(lr, s, min_size=max(1, h // 64))]  # LR → HR pixels
        name = "overlay_" + "".join(ch if ch.isalnum() else "_" for ch in str(key))
        title = f"{key}: s = {s:g}, patch density {100 * float(mask.float().mean()):.1f}%"
        written.append((title, plot_quadtree_overlay(img.hr, mask, out / name, title=title, leaves=leaves)))
    return written
