"""Generated piecewise-constant CT phantoms and scikit-image's Shepp-Logan phantom."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from qdm_bench.data.core import EvalImage, _Loader, _positive, _to_hr
from qdm_bench.errors import require
from qdm_bench.data.medical import _window_label, ct_window

__all__ = ["PHANTOM_SIZE", "ORGAN_HU", "ct_phantom"]

PHANTOM_SIZE = 256
PHANTOM_NOISE_HU = 10.0
# (HU, name) of the organ ellipses a generated phantom draws from
ORGAN_HU = ((60.0, "liver"), (30.0, "kidney"), (45.0, "spleen"), (10.0, "fluid"), (-90.0, "fat"), (150.0, "vessel"))


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ay: float, ax: float, angle: float) -> np.ndarray:
    """Boolean mask of a rotated ellipse (centre, semi-axes, angle in radians) on a coordinate grid."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    return (u / ax) ** 2 + (v / ay) ** 2 <= 1.0


def ct_phantom(size: int = PHANTOM_SIZE, seed: int = 0, noise: float = 0.0) -> np.ndarray:
    """A piecewise-constant CT-like slice in HU, (size, size) float32, deterministic by seed.

    Air (-1000 HU) around a body outline (a fat layer of -100 HU around soft tissue of 40 HU), 3-6 random organ
    ellipses (HU from ``ORGAN_HU``), a vertebra (cortical 700 HU, cancellous 180 HU) and, for about half of the seeds,
    two lungs (-850 HU). Edges are hard (no antialiasing), so regions are exactly constant. ``noise`` adds Gaussian
    noise of that standard deviation in HU (its own generator, so the geometry does not depend on it).
    """
    size = _positive(size, "size")
    rng = np.random.default_rng(seed)
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    img = np.full((size, size), -1000.0)
    by, bx, cy = rng.uniform(0.6, 0.75), rng.uniform(0.8, 0.92), rng.uniform(-0.05, 0.05)
    img[_ellipse(yy, xx, cy, 0.0, by, bx, 0.0)] = -100.0
    inner = _ellipse(yy, xx, cy, 0.0, 0.88 * by, 0.92 * bx, 0.0)
    img[inner] = 40.0
    if rng.random() < 0.5:
        for side in (-1.0, 1.0):
            lung = _ellipse(yy, xx, cy - 0.1 * by, side * 0.45 * bx, 0.55 * by, 0.3 * bx, side * 0.2)
            img[lung & inner] = -850.0
    for _ in range(int(rng.integers(3, 7))):
        hu = ORGAN_HU[int(rng.integers(len(ORGAN_HU)))][0]
        oy, ox = cy + rng.uniform(-0.5, 0.4) * by, rng.uniform(-0.6, 0.6) * bx
        organ = _ellipse(yy, xx, oy, ox, rng.uniform(0.06, 0.3) * by, rng.uniform(0.06, 0.3) * bx,
                         rng.uniform(0.0, math.pi))
        img[organ & inner] = hu
    vy = cy + 0.62 * by
    img[_ellipse(yy, xx, vy, 0.0, 0.12 * by, 0.1 * bx, 0.0)] = 700.0
    img[_ellipse(yy, xx, vy, 0.0, 0.07 * by, 0.06 * bx, 0.0)] = 180.0
    if noise > 0:
        img = img + np.random.default_rng([seed, 1]).normal(0.0, noise, img.shape)
    return img.astype(np.float32)


def _phantom_loader(name: str, seed: int, noise: float, size: int) -> _Loader:
    """A loader for a generated CT phantom, windowed like CT."""
    def load() -> list[EvalImage]:
        x = ct_window(ct_phantom(size, seed, noise))
        extra = f", Gaussian noise {noise:g} HU" if noise else ""
        source = f"generated CT phantom (ct_phantom(size={size}, seed={seed}){extra})"
        return [EvalImage(name, _to_hr(x, name), "phantom", source, _window_label())]
    return load


def _shepp_logan_loader(size: int) -> _Loader:
    """A loader for scikit-image's Shepp-Logan phantom, nearest-neighbour resized to size×size."""
    def load() -> list[EvalImage]:
        require("skimage", "the Shepp-Logan phantom")
        from skimage import data

        x = torch.from_numpy(np.asarray(data.shepp_logan_phantom(), dtype=np.float32))[None, None]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="nearest-exact")
        source = f"skimage.data.shepp_logan_phantom(), nearest resize to {size}x{size}"
        return [EvalImage("shepp_logan", x[0].expand(3, -1, -1).clamp(0, 1).contiguous(), "phantom", source, None)]
    return load


def _phantom_entries(size: int) -> list[tuple[str, _Loader]]:
    """Shepp-Logan and the generated CT phantoms at size×size."""
    entries = [("shepp_logan", _shepp_logan_loader(size))]
    entries += [(f"ct_phantom_{s}", _phantom_loader(f"ct_phantom_{s}", s, 0.0, size)) for s in range(3)]
    entries.append(("ct_phantom_noisy", _phantom_loader("ct_phantom_noisy", 0, PHANTOM_NOISE_HU, size)))
    return entries
