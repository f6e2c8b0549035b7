"""Image-quality metrics of super-resolution against HR, registered by name (``docs/measurement.md`` §5).

Conventions, as in the QDM paper and the SR literature:

* **PSNR and SSIM on Y**: BT.601 YCbCr luma (Y = 16 + 65.481·R + 128.553·G + 24.966·B for RGB in [0, 1], so Y lies in
  [16, 235]) computed by scikit-image's ``rgb2ycbcr``; PSNR with peak 255, SSIM with Wang et al.'s settings (Gaussian
  window σ = 1.5, K1 = 0.01, K2 = 0.03, population covariance) by ``skimage.metrics``.  Not pyiqa's default YIQ luma,
  which reads 1.32 dB lower.  ``crop`` pixels are removed from every border first (the convention: crop = scale).
* **RGB PSNR** (``psnr_rgb``) with the same crop, as NTIRE ranks.
* **Convention** (``convention``): "float" scores SR and HR as they are; "published" first rounds both to uint8
  levels, ``round(clip(x, 0, 1) · 255)`` (half up, as MATLAB's im2uint8), as published SR tables score uint8 PNGs;
  Y, the crop and the SSIM settings are the same.  It applies to every full-reference metric; learned metrics
  always see the images as given.
* **LPIPS, CLIPIQA, MUSIQ** on RGB in [0, 1] through pyiqa, whenever pyiqa imports and the weight files are in the
  torch hub cache; otherwise the metric is reported as "not available: place FILE in DIR" (never a crash or a zero).

Why PSNR/SSIM do not go through pyiqa: pyiqa needs torchvision, and the only torchvision wheels for torch 2.13 are
CUDA builds that cannot be imported beside the CPU torch of the CI environment (docs/measurement.md §5.4).  Where pyiqa works, a test
checks that its ``psnr(test_y_channel=True, color_space='ycbcr')`` equals :func:`psnr_y`.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from qdm_bench.errors import ConfigError, require
from qdm_bench.measure.cell import METRIC_CONVENTIONS

__all__ = ["FULL_REFERENCE", "LEARNED", "METRICS", "y_channel", "psnr_y", "ssim_y", "psnr_rgb", "hub_dir",
           "learned_metric", "score", "register_metric", "METRIC_FUNCTIONS", "METRIC_CONVENTIONS", "to_convention"]

FULL_REFERENCE = ("psnr", "ssim", "psnr_rgb")
LEARNED: dict[str, tuple[tuple[str, str], ...]] = {  # metric -> files (hub sub-folder, name) pyiqa loads offline
    "lpips": (("checkpoints", "alexnet-owt-7be5be79.pth"), ("pyiqa", "LPIPS_v0.1_alex-df73285e.pth")),
    "clipiqa": (("clip", "RN50.pt"),),
    "musiq": (("pyiqa", "musiq_koniq_ckpt-e95806b9.pth"),),
}
METRICS = FULL_REFERENCE + tuple(LEARNED)


def _images(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) tensor in [0, 1] → float64 array (B, H, W, 3), checked."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    a = x.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    if a.min() < -1e-6 or a.max() > 1 + 1e-6:
        raise ValueError("images must be in [0, 1] for scoring; map [-1, 1] outputs with (x + 1) / 2 and clamp")
    return a.clip(0.0, 1.0)


def to_convention(x: torch.Tensor, convention: str = "float") -> torch.Tensor:
    """Images as the convention scores them: unchanged ("float"), or rounded to uint8 levels / 255 ("published")."""
    if convention not in METRIC_CONVENTIONS:
        raise ConfigError(f"unknown metric convention {convention!r}; use {' or '.join(METRIC_CONVENTIONS)}")
    if convention == "float":
        return x
    return torch.from_numpy(np.floor(_images(x) * 255.0 + 0.5) / 255.0).permute(0, 3, 1, 2)


def _crop(a: np.ndarray, crop: int) -> np.ndarray:
    if crop < 0 or 2 * crop >= min(a.shape[1], a.shape[2]):
        raise ValueError(f"border crop {crop} does not fit images of {a.shape[1]}x{a.shape[2]}")
    return a[:, crop:a.shape[1] - crop, crop:a.shape[2] - crop] if crop else a


METRIC_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {}  # full-reference metrics: name -> fn(sr, hr, crop)


def register_metric(name: str) -> Callable:
    """Decorator registering a full-reference metric ``fn(sr, hr, crop) -> (B,) tensor`` under ``name``."""

    def deco(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        METRIC_FUNCTIONS[name] = fn
        return fn

    return deco


def y_channel(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (B, H, W) in [16, 235] of RGB images (B, 3, H, W) in [0, 1]."""
    require("skimage", "PSNR/SSIM scoring")
    from skimage.color import rgb2ycbcr

    return torch.from_numpy(np.stack([rgb2ycbcr(img)[..., 0] for img in _images(x)]))


def _pairs(sr: torch.Tensor, hr: torch.Tensor, crop: int, luma: bool,
           convention: str = "float") -> list[tuple[np.ndarray, np.ndarray]]:
    if sr.shape != hr.shape:
        raise ValueError(f"SR {tuple(sr.shape)} and HR {tuple(hr.shape)} differ in shape")
    require("skimage", "PSNR/SSIM scoring")
    from skimage.color import rgb2ycbcr

    sr, hr = to_convention(sr, convention), to_convention(hr, convention)

    a, b = _crop(_images(sr), crop), _crop(_images(hr), crop)
    if luma:
        return [(rgb2ycbcr(s)[..., 0], rgb2ycbcr(h)[..., 0]) for s, h in zip(a, b)]
    return [(s * 255.0, h * 255.0) for s, h in zip(a, b)]


def _psnr(s: np.ndarray, h: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(s, h):
        return float("inf")
    return float(peak_signal_noise_ratio(h, s, data_range=255.0))


@register_metric("psnr")
def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop: int = 0, convention: str = "float") -> torch.Tensor:
    """PSNR (dB) on BT.601 Y (peak 255) per image; sr and hr are (B, 3, H, W) in [0, 1]."""
    return torch.tensor([_psnr(s, h) for s, h in _pairs(sr, hr, crop, True, convention)], dtype=torch.float64)


@register_metric("psnr_rgb")
def psnr_rgb(sr: torch.Tensor, hr: torch.Tensor, crop: int = 0, convention: str = "float") -> torch.Tensor:
    """PSNR (dB) over the three RGB channels per image."""
    return torch.tensor([_psnr(s, h) for s, h in _pairs(sr, hr, crop, False, convention)], dtype=torch.float64)


@register_metric("ssim")
def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop: int = 0, convention: str = "float") -> torch.Tensor:
    """SSIM on BT.601 Y per image (Gaussian window σ 1.5, data range 255, as Wang et al. and the SR literature)."""
    from skimage.metrics import structural_similarity

    vals = [structural_similarity(h, s, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False) for s, h in _pairs(sr, hr, crop, True, convention)]
    return torch.tensor(vals, dtype=torch.float64)


def hub_dir() -> Path:
    """The torch hub cache where pyiqa and torchvision look for weights ($TORCH_HOME/hub, default ~/.cache/torch/hub)."""
    return Path(torch.hub.get_dir())


@functools.lru_cache(maxsize=None)
def learned_metric(name: str, device: str = "cpu") -> tuple[Callable[..., torch.Tensor] | None, str | None]:
    """(pyiqa metric, None) when ``name`` can run offline here, else (None, "not available: …" with the fix)."""
    if name not in LEARNED:
        raise ConfigError(f"unknown learned metric {name!r}; use one of {', '.join(LEARNED)}")
    hub = hub_dir()
    missing = [(hub / sub, f) for sub, f in LEARNED[name] if not (hub / sub / f).is_file()]
    if missing:
        return None, "; ".join(f"not available: place {f} in {d}" for d, f in missing)
    os.environ.setdefault("TORCH_HOME", str(hub.parent))  # pyiqa reads its cache path at import time
    try:
        import pyiqa
    except Exception as e:  # noqa: BLE001 - a broken torchvision raises RuntimeError, a missing one ImportError
        return None, (f"not available: pyiqa cannot be imported ({type(e).__name__}: {str(e).splitlines()[0][:80]}); "
                      "install the `quality` extra where torchvision works (torch 2.14.1 + torchvision 0.29.1)")
    try:
        return pyiqa.create_metric(name, device=device, as_loss=False), None
    except Exception as e:  # noqa: BLE001 - e.g. a wrong file in the cache
        return None, f"not available: pyiqa could not create {name} ({type(e).__name__}: {str(e)[:100]})"


def score(sr: torch.Tensor, hr: torch.Tensor, crop: int = 0, metrics: Sequence[str] = METRICS,
          device: str = "cpu", convention: str = "float") -> tuple[dict[str, list[float | None]], list[str]]:
    """Per-image values of each metric, and notes for metrics that are not available (their values are None).

    ``convention`` "published" rounds SR and HR to uint8 levels for the full-reference metrics (not the learned)."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ConfigError(f"unknown metrics {sorted(unknown)}; use {', '.join(METRICS)}")
    funcs = METRIC_FUNCTIONS
    values: dict[str, list[float | None]] = {}
    notes: list[str] = []
    fr_sr, fr_hr = to_convention(sr, convention), to_convention(hr, convention)
    for m in metrics:
        if m in funcs:
            values[m] = [float(v) for v in funcs[m](fr_sr, fr_hr, crop)]
            continue
        metric, why = learned_metric(m, device)
        if metric is None:
            values[m] = [None] * sr.shape[0]
            notes.append(f"{m} {why}")
            continue
        s, h = (torch.from_numpy(_crop(_images(x), crop)).permute(0, 3, 1, 2).float().to(device) for x in (sr, hr))
        with torch.no_grad():
            out = metric(s, h) if metric.metric_mode == "FR" else metric(s)
        values[m] = [float(v) for v in torch.as_tensor(out).flatten().cpu()]
    return values, notes
