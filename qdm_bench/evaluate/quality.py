"""The quality metric: super-resolve a cell's image with a trained checkpoint and score SR and bicubic against HR.

:data:`PLUGIN` is the measurement plugin the core runs for ``quality`` cells; :func:`quality_cells` builds those
cells for ``qdm-bench quality``.  Scores come from :mod:`qdm_bench.evaluate.metrics` (PSNR/SSIM on Y with a
border crop of ``scale``, learned metrics through pyiqa when available).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from qdm_bench.errors import ConfigError
from qdm_bench.evaluate.metrics import METRICS, score
from qdm_bench.evaluate.tiles import from_tiles, to_tiles

__all__ = ["sample_and_score", "quality_cells", "checkpoint_tile", "check_checkpoint", "PLUGIN", "QualityPlugin",
           "to_tiles", "from_tiles", "psnr_y"]

from qdm_bench.evaluate.metrics import psnr_y  # noqa: E402 - re-exported for callers of the quality API


def sample_and_score(cell: Any, image: Any, metrics: Sequence[str] = METRICS) -> tuple[dict[str, Any], list[str]]:
    """Super-resolve the cell's image with its checkpoint and score SR and bicubic against HR.

    The LR input is the HR image degraded by bicubic ×scale with antialiasing, as for the masks and the training
    data; with ``cell.input.metric_convention`` "published" it is MATLAB's imresize bicubic with uint8 rounding,
    SR and HR are rounded to uint8 before PSNR/SSIM, and the bicubic floor is MATLAB's bicubic upsampling of
    that LR (:mod:`qdm_bench.data.matlab_resize`).  The sampler runs all of the model's steps with the cell's
    threshold (None: full mask) and seed.  With ``cell.sampling.tile`` the LR image is cut into tiles of
    ``tile/scale`` pixels that are super-resolved independently, as one batch (a model trained on crops of that
    size sees the positions it was trained on), and stitched; the row's MACs and mask statistics are then those
    of the tiles, i.e. of exactly what ran.  The bicubic floor is always the upsampling of the whole LR image.
    Returns the result-row fields and notes.
    """
    import torch.nn.functional as F

    from qdm_bench.evaluate.diffusions import diffusion_for
    from qdm_bench.data.images import degrade, lr_condition
    from qdm_bench.data.matlab_resize import imresize
    from qdm_bench.measure.macs import count_macs
    from qdm_bench.registry import resolve
    from qdm_bench.evaluate.train import load_checkpoint

    ckpt_path, name, device = cell.model.ckpt, cell.model.name, cell.run.device
    i, s = cell.input, cell.sampling
    if ckpt_path is None:
        raise ConfigError("quality needs a checkpoint; pass --ckpt PATH (from `qdm-bench train`)")
    if image is None:
        raise ConfigError("quality needs an image; pass --images SET or --image NAME")
    hr = image.hr[None].float()
    height, width, sf = i.height, i.width, i.scale
    if tuple(hr.shape[-2:]) != (height, width):
        raise ConfigError(f"image {image.name} is {hr.shape[-2]}x{hr.shape[-1]} but the cell runs at "
                          f"{height}x{width}; use --res equal to --image-size")
    tile = s.tile or None
    model, ckpt = load_checkpoint(ckpt_path, name)
    model = model.to(device).eval()
    convention = i.metric_convention
    lr = degrade(hr, sf, kernel=i.lr_kernel)
    lq = lr_condition(lr)
    x = to_tiles(lq, tile // sf) if tile else lq
    diffusion = diffusion_for(resolve(name), (ckpt.get("config") or {}).get("kappa"), s.posterior)
    options = {}
    if s.sampler == "deterministic":
        if resolve(name).diffusion == "bi-diffsr":
            raise ConfigError("BI-DiffSR's DDIM sampler is deterministic given x_T already; use --samplers stochastic")
        options["deterministic"] = True
    sr = 0
    with torch.inference_mode():
        for k in range(s.ensemble):  # an ensemble averages samples of consecutive seeds (same mask)
            res = diffusion.sample(model, x.to(device), sf=sf, threshold=cell.mask.threshold, seed=i.seed + k,
                                   **options)
            sr = sr + res.sr.float().cpu() / s.ensemble
    if tile:
        sr = from_tiles(sr, height // tile, width // tile)
    sr = ((sr + 1) / 2).clamp(0, 1)
    if convention == "published":  # MATLAB's bicubic upsampling of the uint8 LR (rounded to uint8 when scored)
        bicubic = imresize(lr, float(sf)).clamp(0, 1)
    else:
        bicubic = ((F.interpolate(lq, size=(height, width), mode="bicubic", align_corners=False) + 1) / 2).clamp(0, 1)
    values, notes = score(sr, hr, crop=sf, metrics=metrics, device=device, convention=convention)
    if s.ensemble > 1:
        last = i.seed + s.ensemble - 1
        notes.append(f"the mean of {s.ensemble} stochastic samples (seeds {i.seed}..{last}): {s.ensemble}x "
                     "the network evaluations of one")
    floor, _ = score(bicubic, hr, crop=sf, metrics=("psnr", "ssim"), convention=convention)
    row = {m: v[0] for m, v in values.items()}
    row.update(bicubic_psnr=floor["psnr"][0], bicubic_ssim=floor["ssim"][0], ckpt=str(ckpt_path))
    if ckpt.get("train_seconds") is not None:
        notes.append(f"checkpoint: {ckpt.get('step')} training steps in {ckpt['train_seconds']:.0f} s "
                     f"({ckpt.get('train_threads')} threads)")
    if tile and "macs" in cell.metrics:  # cost of what ran: the tiles as one batch, on their own masks
        mask = res.model_mask.cpu() if cell.mask.threshold is not None else None
        mc = count_macs(name, (tile, tile), x.shape[0], mask=mask, **ckpt.get("overrides", {}))
        row.update(macs=mc.macs, attention_macs=mc.attention_macs, macs_per_sr=mc.macs_per_sr)
        if mc.total_windows:
            row.update(active_windows=mc.active_windows, total_windows=mc.total_windows,
                       window_density=mc.active_windows / mc.total_windows,
                       patch_density=float(res.model_mask.float().mean()))
        notes.append(f"sampled in {x.shape[0]} independent {tile}x{tile} tiles; MACs and mask statistics are the "
                     "tiles'")
    return row, notes


def check_checkpoint(path: str, model: str | None = None) -> None:
    """Build the checkpoint's model and load its weights once, so a checkpoint of other weights is refused with
    one line before any cell runs (not turned into an error row per image)."""
    from qdm_bench.evaluate.train import load_checkpoint

    load_checkpoint(path, model)


def _checkpoint_meta(path: str, model: str | None = None) -> dict[str, Any]:
    """Model name, training configuration and held-out image names of a checkpoint (checked as for a load)."""
    from qdm_bench.evaluate.train import read_checkpoint

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
    reverse-step form of ``posteriors`` (QDM's Eq. 4 "paper" and/or the authors' code, "reference"; docs/qdm.md §3.5); the
    full-mask cell, where the two coincide, once with none.  Stochastic cells are made once per ``ensembles`` size
    (the mean of that many samples; 1 = the sampler's own output).  ``metric_convention`` (a cell keyword:
    "float" or "published") chooses how the LR is made and SR is scored (see :func:`sample_and_score`).
    """
    from qdm_bench.data.images import image_keys
    from qdm_bench.measure.sweep import make_cells

    meta = _checkpoint_meta(ckpt, model)
    check_checkpoint(ckpt, model)
    name = model or meta["model"]
    cfg = meta["config"]
    tile = checkpoint_tile(meta, tile)
    size = image_size or int(cfg.get("image_size", 256))
    sf = scale or int(cfg.get("scale", 4))
    if data == "heldout":
        spec, names = cfg.get("images", "ct"), meta["held_out"]
        if not names:
            raise ConfigError(f"checkpoint {ckpt} held out no images (trained with --holdout 0); pass --data SET")
        held = {n.split("[")[0] for n in names}  # a built-in key is "set:name", a folder key the file's path
        keys = [k for k in image_keys(spec) if k.split(":", 1)[-1] in held or Path(k).name in held]
        keys = keys[:limit] if limit else keys
    else:
        keys = image_keys(data, limit=limit)
    if not keys:
        raise ConfigError(f"no images selected from {data!r}; check --data")
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


class QualityPlugin:
    """PSNR/SSIM on Y, RGB PSNR and learned metrics of a checkpoint's super-resolution, with the bicubic floor."""

    name = "quality"
    columns = {
        "ckpt": "the checkpoint that was sampled",
        "psnr": "PSNR on BT.601 Y (peak 255), border crop = scale, dB",
        "ssim": "SSIM on BT.601 Y (Gaussian window sigma 1.5), border crop = scale",
        "psnr_rgb": "PSNR over the RGB channels, border crop = scale, dB",
        "lpips": "LPIPS (pyiqa), when available", "clipiqa": "CLIPIQA (pyiqa), when available",
        "musiq": "MUSIQ (pyiqa), when available",
        "bicubic_psnr": "PSNR-Y of bicubic upsampling of the same LR image (the floor; published convention: "
                        "MATLAB bicubic, uint8)",
        "bicubic_ssim": "SSIM-Y of bicubic upsampling of the same LR image (as bicubic_psnr)",
    }

    def measure(self, ctx: Any, row: dict[str, Any]) -> None:
        """Sample and score; an ensemble's super-resolution costs ``ensemble`` times the MACs of one."""
        ctx.release()  # the real model of memory/speed is not needed any more
        ctx.say("sampling")
        values, notes = sample_and_score(ctx.cell, ctx.image)
        row.update(values)
        ensemble = ctx.cell.sampling.ensemble
        if ensemble > 1 and row.get("macs_per_sr") is not None:  # every sample runs the whole chain
            row["macs_per_sr"] *= ensemble
        ctx.notes += notes


PLUGIN = QualityPlugin()
