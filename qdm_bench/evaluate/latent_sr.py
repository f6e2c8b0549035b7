"""The authors' latent SR pipeline on a folder of images: load their QDM and first-stage checkpoints, super-resolve,
score against HR images, count the whole pipeline's MACs and measure its peak memory (``qdm-bench sr``)."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from qdm_bench.errors import CheckpointError, ConfigError, ImageError

__all__ = ["SRJob", "load_pipeline", "pipeline_costs", "run_sr", "sr_key"]

Y_METRICS = ("psnr", "ssim")


@dataclass(frozen=True)
class SRJob:
    """One ``qdm-bench sr`` run: what to load, which images, where to write."""

    preset: str
    ckpt: str
    first_stage: str
    images: str  # LR images: a folder, a file or a built-in set (with from_hr: the HR images)
    hr: str | None = None  # folder of HR images matched by file name
    from_hr: bool = False  # --images are HR: the LR is their bicubic downscale by sf (kernel: metric_convention)
    thresholds: tuple[float, ...] | None = None  # None: the preset's
    seed: int = 0
    device: str = "cpu"
    tile_batch: int = 4
    out_dir: str | None = None
    limit: int | None = None
    metrics: tuple[str, ...] = Y_METRICS
    model: str | None = None  # denoiser other than the preset's (e.g. a smaller QDM of your own)
    model_options: tuple[tuple[str, Any], ...] = ()  # its architecture options (dim=..., depth=..., heads=...)
    metric_convention: str = "float"  # "published": LR (from_hr) by MATLAB imresize, uint8 scoring

    def denoiser(self, preset_model: str) -> tuple[str, dict[str, Any]]:
        """The denoiser's registered name and build options."""
        return self.model or preset_model, dict(self.model_options)


def load_pipeline(job: SRJob):
    """(LatentSR on ``job.device``, the preset) with the authors' weights; bad files raise one-line errors."""
    from qdm.first_stage import load_first_stage
    from qdm.latent import LatentSR, preset
    from qdm_bench.registry import ModelError, create_model

    try:
        p = preset(job.preset)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    name, options = job.denoiser(p.model)
    try:
        denoiser = create_model(name, checkpoint_path=job.ckpt, chunk_size=p.chunk_size, **options)
    except ModelError as e:
        raise CheckpointError(f"{e} (preset {p.name} runs {name})") from None
    try:
        stage = load_first_stage(job.first_stage)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    except ImportError as e:
        raise ConfigError(str(e)) from None
    if stage.kind != p.first_stage:
        want = {"kl": "the KL autoencoder (medical_autoencoder.ckpt)", "vq": "the VQ-f4 (autoencoder_vq_f4.pth)"}
        raise CheckpointError(f"preset {p.name} needs {want[p.first_stage]}, but {job.first_stage} is a "
                              f"{stage.kind.upper()} autoencoder; pass --first-stage with the right file")
    dev = torch.device(job.device)
    return LatentSR(denoiser.to(dev).eval(), stage.to(dev).eval(), p, tile_batch=job.tile_batch), p


def pipeline_costs(pipe: Any, stats: Any, job: SRJob) -> dict[str, int]:
    """Exact MACs of what ran (meta-device counts): encoder, all denoiser evaluations, decoder, and their sum."""
    from qdm.first_stage import FirstStage
    from qdm_bench.measure.macs import count_model_macs, count_module_macs
    from qdm_bench.registry import create_model, resolve

    p = pipe.preset
    name, options = job.denoiser(p.model)
    info = resolve(name)
    with torch.device("meta"):
        den = create_model(name, chunk_size=p.chunk_size, **options).eval()
        stage = FirstStage(pipe.first_stage.config).eval()
    lh, lw = stats.latent
    ch, cw = stats.tile_lr
    enc = dec = den_macs = 0
    for mask in stats.model_masks:  # one tile batch each
        b = mask.shape[0]
        with torch.device("meta"):
            y = torch.empty(b, 3, ch * p.sf, cw * p.sf)
            z = torch.empty(b, pipe.first_stage.config.embed_dim, lh, lw)
        enc += count_module_macs(stage.encoder_module(), y)[0]
        dec += count_module_macs(stage.decoder_module(), z)[0]
        den_macs += p.steps * count_model_macs(den, info, lh, lw, b, mask=mask).macs
    return {"macs_encoder": enc, "macs_denoiser": den_macs, "macs_decoder": dec, "macs": enc + den_macs + dec,
            "params_denoiser": sum(t.numel() for t in den.parameters()),
            "params_first_stage": sum(t.numel() for t in stage.parameters())}


def sr_key(job: SRJob, image: str, threshold: float) -> str:
    """The identity of one result row (resuming skips rows already in the results file)."""
    fields = (job.preset, Path(job.ckpt).name, Path(job.first_stage).name, image, threshold, job.seed, job.from_hr,
              job.tile_batch, job.model, job.model_options)
    if job.metric_convention != "float":  # the default keeps the keys of earlier results files
        fields += (job.metric_convention,)
    text = "|".join(map(str, fields))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _pairs(job: SRJob, sf: int) -> list[tuple[str, torch.Tensor, torch.Tensor | None]]:
    """(name, LR in [0, 1] (1, 3, h, w), HR in [0, 1] or None) for every image of the job."""
    from qdm_bench.data.images import degrade, load_image_set, read_image_file
    from qdm_bench.measure.cell import LR_KERNELS

    images = load_image_set(job.images, multiple=sf if job.from_hr else 1, limit=job.limit)
    out = []
    for img in images:
        if job.from_hr:
            out.append((img.name, degrade(img.hr[None], sf, kernel=LR_KERNELS[job.metric_convention]),
                        img.hr[None]))
            continue
        hr = None
        if job.hr is not None:
            folder = Path(job.hr)
            match = [f for f in sorted(folder.iterdir()) if f.name == img.name or f.stem == Path(img.name).stem]
            if not match:
                raise ImageError(f"no HR image for {img.name} in {folder}; name the HR files as the LR ones")
            hr = read_image_file(match[0])[0].hr[None]
            want = (img.size[0] * sf, img.size[1] * sf)
            if tuple(hr.shape[-2:]) != want:
                raise ImageError(f"HR {match[0]} is {hr.shape[-2]}x{hr.shape[-1]} but LR {img.name} x{sf} is "
                                 f"{want[0]}x{want[1]}; give HR images of exactly sf times the LR size")
        out.append((img.name, img.hr[None], hr))
    return out


def _peak(fn: Callable[[], torch.Tensor], device: str) -> tuple[torch.Tensor, int, str]:
    """(fn(), peak memory in bytes above what was resident before, method)."""
    from qdm_bench.measure.memory import peak_memory_cpu, peak_memory_cuda

    box: list[torch.Tensor] = []

    def call() -> None:
        box.append(fn())

    res = peak_memory_cuda(call, device, warmup=0) if torch.device(device).type == "cuda" else \
        peak_memory_cpu(call, warmup=0)
    return box[-1], res.peak_bytes, res.method


def run_sr(job: SRJob, results: str, on_image: Callable[[str, dict[str, Any]], None] | None = None,
           on_tile: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """Super-resolve every image of ``job`` at each threshold, appending one row per (image, threshold) to
    ``results`` as soon as it exists; rows already there are kept, not re-measured."""
    from qdm.latent import TileStats, preset
    from qdm_bench.evaluate.metrics import score
    from qdm_bench.measure.results import append_result, read_results

    try:
        base = preset(job.preset)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    thresholds = job.thresholds if job.thresholds is not None else (base.threshold,)
    pairs = _pairs(job, base.sf)  # every image read (and checked) before anything runs
    done = {r.get("key"): r for r in (read_results(results) if Path(results).exists() else [])
            if r.get("status") == "ok"}
    rows = []
    pipe, loaded = load_pipeline(job)  # the weights once; a threshold only changes the preset the sampler reads
    for threshold in thresholds:
        p = pipe.preset = replace(loaded, threshold=threshold)
        for name, lr, hr in pairs:
            key = sr_key(job, name, threshold)
            if key in done:
                rows.append(dict(done[key], cached=True))
                if on_image:
                    on_image(name, rows[-1])
                continue
            stats = TileStats()
            x = (lr * 2 - 1).to(job.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                sr, peak, method = _peak(lambda: pipe(x, seed=job.seed, stats=stats, on_tile=on_tile), job.device)
            seconds = time.perf_counter() - t0
            sr01 = ((sr.float().cpu() + 1) / 2).clamp(0, 1)
            row: dict[str, Any] = {
                "key": key, "command": "sr", "status": "ok", "preset": p.name, "model": job.denoiser(p.model)[0],
                "first_stage": p.first_stage, "ckpt": str(job.ckpt), "first_stage_ckpt": str(job.first_stage),
                "image": name, "lr_height": int(lr.shape[-2]), "lr_width": int(lr.shape[-1]), "sf": p.sf,
                "threshold": threshold, "seed": job.seed, "device": job.device, "tiles": stats.tiles,
                "tile_batch": job.tile_batch, "nfe": p.steps,
                "patch_density": sum(stats.densities) / len(stats.densities),
                "seconds": seconds, "peak_mem_bytes": peak, "peak_mem_method": method,
                "metric_convention": job.metric_convention,
            }
            row.update(pipeline_costs(pipe, stats, job))
            if hr is not None:
                values, notes = score(sr01, hr, crop=p.sf, metrics=job.metrics, device=job.device,
                                      convention=job.metric_convention)
                row.update({m: v[0] for m, v in values.items()})
                if notes:
                    row["notes"] = "; ".join(notes)
            if job.out_dir:
                row["sr_path"] = _save_png(sr01, Path(job.out_dir) / p.name / f"s{threshold:g}" / name)
            append_result(results, row)
            rows.append(row)
            if on_image:
                on_image(name, row)
    return rows


def _save_png(img: torch.Tensor, path: Path) -> str:
    """Write (1, 3, H, W) in [0, 1] as an 8-bit PNG (the name's suffix replaced by .png); returns the path."""
    import numpy as np
    from PIL import Image

    path = path.with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (img[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(path)
    return str(path)


def validate_job(job: SRJob) -> None:
    """Refuse a bad job before anything runs (one line naming the option)."""
    from qdm.latent import PRESETS
    from qdm_bench.measure.cell import METRIC_CONVENTIONS

    if job.metric_convention not in METRIC_CONVENTIONS:
        raise ConfigError(f"--metric-convention {job.metric_convention!r} is unknown; use "
                          f"{' or '.join(METRIC_CONVENTIONS)}")
    if job.metric_convention != "float" and job.hr is None and not job.from_hr:
        raise ConfigError("--metric-convention published scores SR against HR images; give --hr or --from-hr")
    if job.preset not in PRESETS:
        raise ConfigError(f"--preset {job.preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    for opt, path in (("--ckpt", job.ckpt), ("--first-stage", job.first_stage)):
        if not Path(path).is_file():
            raise ConfigError(f"{opt} {path} is not a file; download it as the README's 'The authors' checkpoints' "
                              "section says")
    if job.hr is not None and not Path(job.hr).is_dir():
        raise ConfigError(f"--hr {job.hr} is not a folder; give the folder of HR images")
    if job.hr is not None and job.from_hr:
        raise ConfigError("--hr and --from-hr exclude each other: with --from-hr the --images are the HR images")
    if job.tile_batch < 1:
        raise ConfigError(f"--tile-batch must be at least 1, got {job.tile_batch}")
    for s in job.thresholds or ():
        if not 0 <= s <= 1:
            raise ConfigError(f"--thresholds: {s} is outside [0, 1]")


def metrics_for(names: Sequence[str]) -> tuple[str, ...]:
    """The metrics to score: PSNR/SSIM on Y always, plus the named learned ones."""
    return tuple(dict.fromkeys((*Y_METRICS, *names)))
