"""The inputs of a cell: its image and LR image, its mask, random network inputs, and the real model's forward."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["lr_test_image", "cell_image", "cell_lr_image", "cell_mask", "random_inputs", "build_real"]


def lr_test_image(height: int, width: int) -> torch.Tensor:
    """The built-in synthetic LR test image, (1, 3, H, W) in [-1, 1]: deterministic for a given size.

    A smooth background with a few sharp-edged discs and stripes (flat regions, edges and texture).  Real images
    (natural photographs, CT/MR slices, phantoms, user folders) come from :mod:`qdm_bench.data.images`.
    """
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = 0.3 + 0.2 * xs
    for cy, cx, r, v in ((0.3, 0.3, 0.12, 0.9), (0.65, 0.7, 0.18, 0.1), (0.75, 0.25, 0.08, 0.6)):
        base = torch.where((ys - cy) ** 2 + (xs - cx) ** 2 < r * r, torch.full_like(base, v), base)
    stripes = (ys > 0.1) & (ys < 0.25) & (xs > 0.55) & (xs < 0.9)
    base = torch.where(stripes, 0.5 + 0.4 * torch.sign(torch.sin(xs * 120)), base)
    img = torch.stack([base, base * 0.9, base * 0.8])[None]
    return (img.clamp(0, 1) - 0.5) / 0.5


def cell_image(cell: Any):
    """The cell's :class:`qdm_bench.data.images.EvalImage` (None without an image), sized as the mask needs it."""
    i = cell.input
    if i.image is None:
        return None
    from qdm_bench.data.images import image_by_name

    return image_by_name(i.image, size=i.image_size, multiple=i.scale)


def cell_lr_image(cell: Any, image: Any = None) -> torch.Tensor:
    """The LR image a threshold mask is computed from, (1, 3, h, w) in [-1, 1].

    With an image (a built-in key such as "natural:astronaut" or a file): the HR image, center-cropped and resized
    to ``image_size`` (native size if None, cropped to a multiple of ``scale``), degraded by bicubic ×``scale``
    (:func:`qdm_bench.data.images.degrade`, with the kernel of the cell's metric convention), kept at LR
    resolution; Alg. 1 pools it to the model's patch grid.
    Without: the built-in synthetic test image at the cell's size.  ``image``: the cell's image if already loaded.
    """
    i = cell.input
    if i.image is None:
        return lr_test_image(i.height, i.width)
    from qdm_bench.data.images import degrade, lr_condition

    img = image if image is not None else cell_image(cell)
    return lr_condition(degrade(img.hr, i.scale, kernel=i.lr_kernel))[None]


def cell_mask(cell: Any, model: torch.nn.Module, image: Any = None) -> torch.Tensor | None:
    """The patch-grid mask of a mask-using model's cell (None: dense path), computed on the CPU from real data.

    ``model`` may live on the meta device: only its ``mask_grid`` and ``random_mask`` are used
    (``docs/model-protocol.md``); ``image``: the cell's image if already loaded.
    """
    m, i = cell.mask, cell.input
    if m.empty:
        return None
    if m.density is not None:
        g = torch.Generator().manual_seed(i.seed)
        return model.random_mask(i.batch, i.height, i.width, m.density, generator=g)
    from qdm.quadtree import quadtree_mask

    lr = cell_lr_image(cell, image).expand(i.batch, -1, -1, -1)
    return quadtree_mask(lr, model.mask_grid(i.height, i.width), m.threshold)


def random_inputs(cell: Any, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Seeded random (x_t, t, lq) for a cell, timesteps drawn in the model's range."""
    from qdm_bench.registry import example_timesteps, resolve

    info, i = resolve(cell.model.name), cell.input
    g = torch.Generator().manual_seed(i.seed)
    x = torch.randn(i.batch, info.in_channels, i.height, i.width, generator=g)
    lq = torch.randn(i.batch, info.lq_channels, i.height, i.width, generator=g)
    t = example_timesteps(info, i.batch, g)
    return x.to(device), t.to(device), lq.to(device)


def build_real(cell: Any, overrides: dict[str, Any], mask: torch.Tensor | None):
    """Model (fp32 weights, autocast for bf16/fp16) and a no-grad forward closure on the cell's device."""
    from qdm_bench.measure.environment import autocast_context
    from qdm_bench.registry import create_model

    device, dtype = cell.run.device, cell.input.dtype
    model = create_model(cell.model.name, **overrides).to(device).eval()
    if hasattr(model, "prepare_inference"):  # e.g. BI-DiffSR binarises its weights once, as deployed
        model.prepare_inference()
    runner = torch.compile(model) if cell.model.compile else model
    x, t, lq = random_inputs(cell, device)
    m = None if mask is None else mask.to(device)

    def fn():
        with torch.inference_mode(), autocast_context(device, dtype):
            return runner(x, t, lq, mask=m)

    return model, fn
