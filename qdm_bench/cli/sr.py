"""``qdm-bench sr``: super-resolve a folder with the authors' QDM and first-stage checkpoints (the latent pipeline)."""
from __future__ import annotations

from pathlib import Path

import click

from qdm_bench.cli.execute import check_writable
from qdm_bench.cli.options import _float_list, metric_convention_option, one_model

__all__ = ["sr_cmd", "parse_model_options", "run_job", "latent_job", "preset_options"]


def preset_options(f):
    """--preset and --first-stage: run the authors' latent pipeline (``quality``, ``ablate threshold``)."""
    f = click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
                     help="With --preset: an architecture option of the denoiser (repeatable), e.g. dim=64.")(f)
    f = click.option("--first-stage", "first_stage", default=None, type=click.Path(dir_okay=False),
                     help="With --preset: the authors' autoencoder checkpoint.")(f)
    return click.option("--preset", "preset_name", default=None,
                        help="Run the authors' latent pipeline with this configuration (see `qdm-bench sr`); "
                             "--ckpt is then their QDM checkpoint and --images the HR images.")(f)

EPILOG_SR = """\b
Examples:
  qdm-bench sr --preset medx4-l --ckpt weights/medx4_l.ckpt --first-stage weights/medical_autoencoder.ckpt \\
      -i ct_lr/ --hr ct_hr/ --out-dir sr/                       # SR images + PSNR/SSIM (Y) per image
  qdm-bench sr --preset medx4-l --ckpt weights/medx4_l.ckpt --first-stage weights/medical_autoencoder.ckpt \\
      -i ct_hr/ --from-hr --thresholds 0,0.05,0.1,0.15,0.2        # Table 3 on your CT folder: LR = bicubic /4
  qdm-bench sr --preset realsr-x4-l --ckpt weights/realsr_l.ckpt --first-stage weights/autoencoder_vq_f4.pth \\
      -i photos/ --out-dir sr/ --device cuda
Presets: realsr-x4-{s,b,l}, medx4-{s,b,l}, medx8-{b,l} (the authors' inference configs; docs/qdm.md §7).
"""


def parse_model_options(values: tuple[str, ...]) -> tuple[tuple[str, int | float | str], ...]:
    """KEY=VALUE strings → typed pairs (int, then float, else the string)."""
    out = []
    for text in values:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"give KEY=VALUE, got {text!r}", param_hint="--model-option")
        value: int | float | str = raw
        for kind in (int, float):
            try:
                value = kind(raw)
                break
            except ValueError:
                continue
        out.append((key.strip(), value))
    return tuple(out)


@click.command("sr", epilog=EPILOG_SR)
@click.option("--preset", "-p", "preset_name", required=True,
              help="The authors' configuration (task, scale, first stage, latent scale, threshold, tiling): "
                   "realsr-x4-{s,b,l}, medx4-{s,b,l} or medx8-{b,l}.")
@click.option("--ckpt", required=True, type=click.Path(dir_okay=False), help="QDM checkpoint of the authors (or ours).")
@click.option("--first-stage", "first_stage", required=True, type=click.Path(dir_okay=False),
              help="First-stage autoencoder checkpoint (KL for medical presets, VQ-f4 for realsr).")
@click.option("--images", "-i", required=True, help="LR images: a folder, a file or a built-in set.")
@click.option("--hr", default=None, type=click.Path(file_okay=False), help="Folder of HR images (same file names).")
@click.option("--from-hr", is_flag=True,
              help="--images are HR images; the LR is their bicubic (antialiased) /sf, by the metric convention's "
                   "resize.")
@click.option("--thresholds", "-s", default=None, help="Comma-separated quadtree thresholds (default: the preset's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the sampler (and KL posterior).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--tile-batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="Tiles super-resolved together (the authors' chop_bs).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images.")
@click.option("--metrics", default="", help="Learned metrics to add to PSNR/SSIM (Y), e.g. lpips,musiq (pyiqa).")
@click.option("--out-dir", default=None, type=click.Path(file_okay=False), help="Write SR images here (PNG).")
@click.option("--out", "-o", default="results/sr.jsonl", show_default=True, type=click.Path(dir_okay=False),
              help="Results file (one row per image and threshold; re-running resumes).")
@click.option("--models", "-m", "model", default=None,
              help="Denoiser other than the preset's (one registered model, e.g. your own size).")
@click.option("--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
              help="Architecture option of the denoiser (repeatable), e.g. dim=64.")
@metric_convention_option
def sr_cmd(preset_name, ckpt, first_stage, images, hr, from_hr, thresholds, seed, device, tile_batch, limit, metrics,
           out_dir, out, model, model_options, metric_convention):
    """Super-resolve images with the authors' latent pipeline: encode, masked sampling, decode (tiled)."""
    from qdm_bench.evaluate.latent_sr import SRJob, metrics_for
    from qdm_bench.evaluate.metrics import METRICS
    from qdm_bench.measure.validate import resolve_device

    device = resolve_device(device)
    model = one_model(model)
    extra = tuple(m.strip() for m in metrics.split(",") if m.strip())
    unknown = [m for m in extra if m not in METRICS]
    if unknown:
        raise click.BadParameter(f"unknown metric {unknown[0]!r}; use {', '.join(METRICS)}", param_hint="--metrics")
    values = None if thresholds is None else tuple(_float_list(thresholds, "--thresholds"))
    job = SRJob(preset_name, ckpt, first_stage, images, hr=hr, from_hr=from_hr, thresholds=values, seed=seed,
                device=device, tile_batch=tile_batch, out_dir=out_dir, limit=limit,
                metrics=metrics_for(extra), model=model, model_options=parse_model_options(model_options),
                metric_convention=metric_convention)
    run_job(job, out)


def run_job(job, out: str) -> None:
    """Validate, run with progress lines, print the table (``sr``, and ``quality`` / ``ablate threshold`` with
    ``--preset``)."""
    from tabulate import tabulate

    from qdm_bench.evaluate.latent_sr import run_sr, validate_job

    validate_job(job)
    check_writable(Path(out))
    count = {"n": 0}

    def on_image(name, row):
        count["n"] += 1
        what = "kept from " + out if row.get("cached") else f"{row['seconds']:.1f} s"
        psnr = f", PSNR {row['psnr']:.2f} dB" if row.get("psnr") is not None else ""
        click.echo(f"[{count['n']}] {name} s={row['threshold']:g}: {row['tiles']} tile(s), "
                   f"{row['macs'] / 1e9:.1f} GMACs{psnr} ({what})", err=True)

    def on_tile(done, total):
        if total > 1:
            click.echo(f"      tiles {done}/{total}", err=True)

    click.echo(f"{job.preset} on {job.device}: {job.images} -> {out}", err=True)
    rows = run_sr(job, out, on_image=on_image, on_tile=on_tile)
    cols = ["image", "threshold", "tiles", "patch_density", "macs", "macs_denoiser", "peak_mem_bytes", "seconds",
            *job.metrics]
    scale = {"macs": 1e9, "macs_denoiser": 1e9, "peak_mem_bytes": 2 ** 20}
    table = [[r.get(c) / scale[c] if c in scale and r.get(c) is not None else r.get(c) for c in cols] for r in rows]
    heads = [{"macs": "GMACs", "macs_denoiser": "GMACs denoiser", "peak_mem_bytes": "peak MiB"}.get(c, c)
             for c in cols]
    click.echo(tabulate(table, headers=heads, floatfmt=".4g"))
    for note in sorted({r["notes"] for r in rows if r.get("notes")}):
        click.echo(note, err=True)


def latent_job(preset_name: str, ckpt: str, first_stage: str | None, images: str, thresholds, seed: int,
               device: str, limit: int | None, model: str | None = None, model_options: tuple[str, ...] = (),
               metric_convention: str = "float"):
    """The SRJob of ``quality`` / ``ablate threshold --preset``: --images are HR images, degraded by the preset's sf;
    'full' (the full mask) is threshold 0 under the authors' ">=" rule."""
    from qdm_bench.evaluate.latent_sr import SRJob

    if first_stage is None:
        raise click.BadParameter("--preset runs the authors' latent pipeline; give the autoencoder file too",
                                 param_hint="--first-stage")
    if images == "heldout":
        raise click.BadParameter("with --preset give the HR images to score (a folder or an image set)",
                                 param_hint="--images")
    values = tuple(0.0 if t is None else float(t) for t in thresholds)
    from qdm_bench.measure.validate import resolve_device

    return SRJob(preset_name, ckpt, first_stage, images, from_hr=True, thresholds=values, seed=seed,
                 device=resolve_device(device), limit=limit, model=model,
                 model_options=parse_model_options(model_options), metric_convention=metric_convention)
