"""Quality of super-resolution: sample with a trained checkpoint, score against the HR image (spec measurement.md §5).

Conventions, as in the QDM paper and the SR literature:

* **PSNR and SSIM on Y**: BT.601 YCbCr luma (Y = 16 + 65.481·R + 128.553·G + 24.966·B for RGB in [0, 1], so Y lies in
  [16, 235]) computed by scikit-image's ``rgb2ycbcr``; PSNR with peak 255, SSIM with Wang et al.'s settings (Gaussian
  window σ = 1.5, K1 = 0.01, K2 = 0.03, population covariance) by ``skimage.metrics``.  Not pyiqa's default YIQ luma,
  which reads 1.32 dB lower.  ``crop`` pixels are removed from every border first (the convention: crop = scale).
* **RGB PSNR** (``psnr_rgb``) with the same crop, as NTIRE ranks.
* **LPIPS, CLIPIQA, MUSIQ** on RGB in [0, 1] through pyiqa, whenever pyiqa imports and the weight files are in the
  torch hub cache; otherwise the metric is reported as "not available: place FILE in DIR" (never a crash or a zero).

Why PSNR/SSIM do not go through pyiqa: pyiqa needs torchvision, and the only torchvision wheels for torch 2.13 are
CUDA builds that cannot be imported beside the CPU torch of the CI environment (spec §5.4).  Where pyiqa works, a test
checks that its ``psnr(test_y_channel=True, color_space='ycbcr')`` equals :func:`psnr_y`.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["FULL_REFERENCE", "LEARNED", "METRICS", "y_channel", "psnr_y", "ssim_y", "psnr_rgb", "hub_dir",
           "learned_metric", "score", "sample_and_score", "quality_cells", "checkpoint_tile", "to_tiles", "from_tiles"]

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


def _crop(a: np.ndarray, crop: int) -> np.ndarray:
    if crop < 0 or 2 * crop >= min(a.shape[1], a.shape[2]):
        raise ValueError(f"border crop {crop} does not fit images of {a.shape[1]}x{a.shape[2]}")
    return a[:, crop:a.shape[1] - crop, crop:a.shape[2] - crop] if crop else a


def y_channel(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (B, H, W) in [16, 235] of RGB images (B, 3, H, W) in [0, 1]."""
    from skimage.color import rgb2ycbcr

    return torch.from_numpy(np.stack([rgb2ycbcr(img)[..., 0] for img in _images(x)]))


def _pairs(sr: torch.Tensor, hr: torch.Tensor, crop: int, luma: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    if sr.shape != hr.shape:
        raise ValueError(f"SR {tuple(sr.shape)} and HR {tuple(hr.shape)} differ in shape")
    from skimage.color import rgb2ycbcr

    a, b = _crop(_images(sr), crop), _crop(_images(hr), crop)
    if luma:
        return [(rgb2ycbcr(s)[..., 0], rgb2ycbcr(h)[..., 0]) for s, h in zip(a, b)]
    return [(s * 255.0, h * 255.0) for s, h in zip(a, b)]


def _psnr(s: np.ndarray, h: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(s, h):
        return float("inf")
    return float(peak_signal_noise_ratio(h, s, data_range=255.0))


def psnr_y(sr: torch.Tensor, hr: torch.Tensor, crop: int = 0) -> torch.Tensor:
    """PSNR (dB) on BT.601 Y (peak 255) per image; sr and hr are (B, 3, H, W) in [0, 1]."""
    return torch.tensor([_psnr(s, h) for s, h in _pairs(sr, hr, crop, luma=True)], dtype=torch.float64)


def psnr_rgb(sr: torch.Tensor, hr: torch.Tensor, crop: int = 0) -> torch.Tensor:
    """PSNR (dB) over the three RGB channels per image."""
    return torch.tensor([_psnr(s, h) for s, h in _pairs(sr, hr, crop, luma=False)], dtype=torch.float64)


def ssim_y(sr: torch.Tensor, hr: torch.Tensor, crop: int = 0) -> torch.Tensor:
    """SSIM on BT.601 Y per image (Gaussian window σ 1.5, data range 255, as Wang et al. and the SR literature)."""
    from skimage.metrics import structural_similarity

    vals = [structural_similarity(h, s, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False) for s, h in _pairs(sr, hr, crop, luma=True)]
    return torch.tensor(vals, dtype=torch.float64)


def hub_dir() -> Path:
    """The torch hub cache where pyiqa and torchvision look for weights ($TORCH_HOME/hub, default ~/.cache/torch/hub)."""
    return Path(torch.hub.get_dir())


@functools.lru_cache(maxsize=None)
def learned_metric(name: str, device: str = "cpu") -> tuple[Callable[..., torch.Tensor] | None, str | None]:
    """(pyiqa metric, None) when ``name`` can run offline here, else (None, "not available: …" with the fix)."""
    if name not in LEARNED:
        raise ValueError(f"unknown learned metric {name!r}; use one of {', '.join(LEARNED)}")
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
          device: str = "cpu") -> tuple[dict[str, list[float | None]], list[str]]:
    """Per-image values of each metric, and notes for metrics that are not available (their values are None)."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; use {', '.join(METRICS)}")
    funcs = {"psnr": psnr_y, "ssim": ssim_y, "psnr_rgb": psnr_rgb}
    values: dict[str, list[float | None]] = {}
    notes: list[str] = []
    for m in metrics:
        if m in funcs:
            values[m] = [float(v) for v in funcs[m](sr, hr, crop)]
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


def to_tiles(x: torch.Tensor, side: int) -> torch.Tensor:
    """(B, C, H, W) → (B·nh·nw, C, side, side): non-overlapping tiles, row-major per image, as one batch."""
    from einops import rearrange

    return rearrange(x, "b c (nh h) (nw w) -> (b nh nw) c h w", h=side, w=side)


def from_tiles(x: torch.Tensor, nh: int, nw: int) -> torch.Tensor:
    """The inverse of :func:`to_tiles` for an ``nh`` × ``nw`` grid of tiles per image."""
    from einops import rearrange

    return rearrange(x, "(b nh nw) c h w -> b c (nh h) (nw w)", nh=nh, nw=nw)


def sample_and_score(cell: Any, image: Any, metrics: Sequence[str] = METRICS) -> tuple[dict[str, Any], list[str]]:
    """Super-resolve the cell's image with its checkpoint and score SR and bicubic against HR.

    The LR input is the HR image degraded by bicubic ×scale with antialiasing, as for the masks and the training
    data.  The sampler runs all of the model's steps with the cell's threshold (None: full mask) and seed.  With
    ``cell.tile`` the LR image is cut into tiles of ``tile/scale`` pixels that are super-resolved independently, as
    one batch (a model trained on crops of that size sees the positions it was trained on), and stitched; the
    row's MACs and mask statistics are then those of the tiles, i.e. of exactly what ran.  The bicubic floor is
    always the upsampling of the whole LR image.  Returns the result-row fields and notes.
    """
    import torch.nn.functional as F

    from qdm_bench.diffusions import diffusion_for
    from qdm_bench.images import degrade, lr_condition
    from qdm_bench.macs import count_macs
    from qdm_bench.registry import resolve
    from qdm_bench.train import load_checkpoint

    if cell.ckpt is None:
        raise ValueError("quality needs a checkpoint; pass --ckpt PATH (from `qdm-bench train`)")
    if image is None:
        raise ValueError("quality needs an image; pass --images SET or --image NAME")
    hr = image.hr[None].float()
    height, width, sf = cell.height, cell.width, cell.scale
    if tuple(hr.shape[-2:]) != (height, width):
        raise ValueError(f"image {image.name} is {hr.shape[-2]}x{hr.shape[-1]} but the cell runs at "
                         f"{height}x{width}; use --res equal to --image-size")
    tile = cell.tile or None
    if tile and (height % tile or width % tile or tile % sf):
        raise ValueError(f"--tile {tile} must divide the image ({height}x{width}) and be a multiple of the scale {sf}")
    model, ckpt = load_checkpoint(cell.ckpt, cell.model)
    model = model.to(cell.device).eval()
    lq = lr_condition(degrade(hr, sf))
    x = to_tiles(lq, tile // sf) if tile else lq
    diffusion = diffusion_for(resolve(cell.model), (ckpt.get("config") or {}).get("kappa"), cell.posterior)
    options = {}
    if cell.sampler == "deterministic":
        if resolve(cell.model).diffusion == "bi-diffsr":
            raise ValueError("BI-DiffSR's DDIM sampler is deterministic given x_T already; use --samplers stochastic")
        options["deterministic"] = True
    sr = 0
    with torch.inference_mode():
        for k in range(cell.ensemble):  # an ensemble averages samples of consecutive seeds (same mask)
            res = diffusion.sample(model, x.to(cell.device), sf=sf, threshold=cell.threshold, seed=cell.seed + k,
                                   **options)
            sr = sr + res.sr.float().cpu() / cell.ensemble
    if tile:
        sr = from_tiles(sr, height // tile, width // tile)
    sr = ((sr + 1) / 2).clamp(0, 1)
    bicubic = ((F.interpolate(lq, size=(height, width), mode="bicubic", align_corners=False) + 1) / 2).clamp(0, 1)
    values, notes = score(sr, hr, crop=sf, metrics=metrics, device=cell.device)
    if cell.ensemble > 1:
        last = cell.seed + cell.ensemble - 1
        notes.append(f"the mean of {cell.ensemble} stochastic samples (seeds {cell.seed}..{last}): {cell.ensemble}x "
                     "the network evaluations of one")
    floor, _ = score(bicubic, hr, crop=sf, metrics=("psnr", "ssim"))
    row = {m: v[0] for m, v in values.items()}
    row.update(bicubic_psnr=floor["psnr"][0], bicubic_ssim=floor["ssim"][0], ckpt=str(cell.ckpt))
    if ckpt.get("train_seconds") is not None:
        notes.append(f"checkpoint: {ckpt.get('step')} training steps in {ckpt['train_seconds']:.0f} s "
                     f"({ckpt.get('train_threads')} threads)")
    if tile and "macs" in cell.metrics:  # cost of what ran: the tiles as one batch, on their own masks
        mask = res.model_mask.cpu() if cell.threshold is not None else None
        mc = count_macs(cell.model, (tile, tile), x.shape[0], mask=mask, **ckpt.get("overrides", {}))
        row.update(macs=mc.macs, attention_macs=mc.attention_macs, macs_per_sr=mc.macs_per_sr)
        if mc.total_windows:
            row.update(active_windows=mc.active_windows, total_windows=mc.total_windows,
                       window_density=mc.active_windows / mc.total_windows,
                       patch_density=float(res.model_mask.float().mean()))
        notes.append(f"sampled in {x.shape[0]} independent {tile}x{tile} tiles; MACs and mask statistics are the "
                     "tiles'")
    return row, notes


def _checkpoint_meta(path: str, model: str | None = None) -> dict[str, Any]:
    """Model name, training configuration and held-out image names of a checkpoint (checked as for a load)."""
    from qdm_bench.train import read_checkpoint

    ckpt = read_checkpoint(path, model)
    return {"model": ckpt.get("model"), "config": ckpt.get("config") or {}, "held_out": ckpt.get("held_out") or []}


def checkpoint_tile(meta: dict[str, Any] | str, tile: int | str | None) -> int | None:
    """The sampling tile: ``"auto"`` = the checkpoint's training crop, None/0 = whole image, else the given side."""
    if tile == "auto":
        meta = _checkpoint_meta(meta) if isinstance(meta, str) else meta
        crop = meta["config"].get("crop")
        return int(crop) if crop else None
    return int(tile) or None if tile is not None else None


def quality_cells(ckpt: str, model: str | None = None, data: str = "heldout", limit: int | None = None,
                  image_size: int | None = None, scale: int | None = None,
                  thresholds: Sequence[float | None] = (None,), seed: int = 0, tile: int | str | None = "auto",
                  samplers: Sequence[str] = ("stochastic",), posteriors: Sequence[str] = ("paper",),
                  ensembles: Sequence[int] = (1,), **cell_kwargs: Any) -> list[Any]:
    """Cells that super-resolve and score each image of ``data`` (default: the checkpoint's held-out images).

    Image size and scale default to the checkpoint's training values; ``tile="auto"`` samples in tiles of the
    training crop (see :func:`sample_and_score`), None or 0 the whole image at once.  Each cell also counts the MACs
    of what it samples, so quality and cost come from the same masks.  Masked (threshold) cells are made once per
    reverse-step form of ``posteriors`` (QDM's Eq. 4 "paper" and/or the authors' code, "reference"; spec §3.5); the
    full-mask cell, where the two coincide, once with none.  Stochastic cells are made once per ``ensembles`` size
    (the mean of that many samples; 1 = the sampler's own output).
    """
    from qdm_bench.images import image_keys
    from qdm_bench.sweep import make_cells

    meta = _checkpoint_meta(ckpt, model)
    name = model or meta["model"]
    cfg = meta["config"]
    tile = checkpoint_tile(meta, tile)
    size = image_size or int(cfg.get("image_size", 256))
    sf = scale or int(cfg.get("scale", 4))
    if data == "heldout":
        spec, names = cfg.get("images", "ct"), meta["held_out"]
        if not names:
            raise ValueError(f"checkpoint {ckpt} held out no images (trained with --holdout 0); pass --data SET")
        held = {n.split("[")[0] for n in names}  # a built-in key is "set:name", a folder key the file's path
        keys = [k for k in image_keys(spec) if k.split(":", 1)[-1] in held or Path(k).name in held]
        keys = keys[:limit] if limit else keys
    else:
        keys = image_keys(data, limit=limit)
    if not keys:
        raise ValueError(f"no images selected from {data!r}; check --data")
    from qdm_bench.registry import resolve

    if not resolve(name).uses_mask:  # thresholds and posteriors are QDM's: other models run once, unmasked
        thresholds = [None]
    cells = []
    for key in keys:
        for sampler in dict.fromkeys(samplers):
            for s in dict.fromkeys(thresholds):  # one call each: make_cells drops the full mask given thresholds
                for posterior in dict.fromkeys(posteriors) if s is not None else [None]:
                    for n in dict.fromkeys(ensembles) if sampler == "stochastic" else [1]:
                        cells += make_cells([name], [(size, size)], thresholds=[s],
                                            metrics=("params", "macs", "quality"), image=key, image_size=size,
                                            scale=sf, ckpt=str(ckpt), seed=seed, tile=tile, sampler=sampler,
                                            posterior=posterior, ensemble=n, **cell_kwargs)
    return cells
