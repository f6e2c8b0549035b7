"""``qdm-bench quality`` and ``qdm-bench train``: sampling and scoring with a checkpoint, and training."""
from __future__ import annotations

import sys

import click

from qdm_bench.cli.execute import _ablation_cell_kwargs, _run_ablation
from qdm_bench.cli.sr import latent_job, preset_options, run_job
from qdm_bench.cli.options import (POSTERIOR_MODES, SAMPLERS, _choices, _int_list, _tile, execution_options,
                                   metric_convention_option, one_model, renamed, tile_option)


# -- quality -------------------------------------------------------------------------------------------------------

EPILOG_QUALITY = """\b
Examples:
  qdm-bench quality --ckpt runs/qdm-t/last.pt                       # the checkpoint's held-out images, full mask
  qdm-bench quality --ckpt runs/qdm-t/last.pt --thresholds full,0.15 # QDM full mask vs threshold 0.15
  qdm-bench quality --ckpt runs/qdm-t/last.pt --thresholds full,0.15 --posteriors paper,reference --ensemble 1,8
  qdm-bench quality -m qdm-t --ckpt runs/qdm-t/last.pt --images phantoms --limit 3
  qdm-bench quality --ckpt runs/qdm-t/last.pt --metric-convention published  # comparable with published SR tables
Scores: PSNR/SSIM on BT.601 Y and RGB PSNR (border crop = scale), LPIPS/CLIPIQA/MUSIQ when pyiqa and their weights
are available (else "not available: place FILE in DIR"). Bicubic upsampling is always scored as the floor.
"""


@click.command(epilog=EPILOG_QUALITY)
@renamed("--model", to="model", new_flag="-m/--models")
@renamed("--data", "-d", to="images", new_flag="-i/--images")
@click.option("--models", "-m", "model", default=None, help="Model of the checkpoint (default: the one it records).")
@click.option("--ckpt", required=True, type=click.Path(dir_okay=False), help="Checkpoint from `qdm-bench train`.")
@click.option("--images", "-i", default="heldout", show_default=True,
              help="'heldout' (the images the checkpoint's training held out), an image set (ct, phantoms, "
                   "natural, medical, builtin) or a folder of images.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use at most this many images.")
@click.option("--image-size", type=click.IntRange(min=1), default=None, help="HR side (default: the checkpoint's training image size).")
@click.option("--scale", type=click.IntRange(min=1), default=None, help="SR factor (default: the checkpoint's).")
@click.option("--thresholds", default="full", show_default=True,
              help="Comma-separated quadtree thresholds for QDM, 'full' for the full mask.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampler seed.")
@click.option("--samplers", default="stochastic", show_default=True,
              help="Comma-separated: stochastic (the paper's sampler) and/or deterministic (x_T = y0, posterior means "
                   "only; same steps).")
@click.option("--posteriors", default="paper", show_default=True,
              help="Comma-separated reverse steps on inactive sites, for thresholds: paper (Eq. 4: x̂0 there) and/or "
                   "reference (the authors' code: the posterior mean everywhere, consistent with training).")
@click.option("--ensemble", default="1", show_default=True,
              help="Comma-separated sample counts for the stochastic sampler: also score the mean of N samples (seeds "
                   "seed..seed+N-1; N times the cost), e.g. 1,8 to see how far one sample is from the posterior mean.")
@tile_option
@metric_convention_option
@preset_options
@execution_options
def quality(model, ckpt, images, limit, image_size, scale, thresholds, seed, samplers, posteriors, ensemble, tile,
            metric_convention, preset_name, first_stage, model_options, **ex) -> None:
    """Super-resolve images with a trained checkpoint (the full sampler) and score SR and bicubic against HR.

    With --preset and --first-stage: the authors' checkpoints through their latent pipeline (as `qdm-bench sr`).
    """
    from qdm_bench.evaluate.quality import quality_cells

    model = one_model(model)
    if limit is not None and limit < 1:
        raise click.BadParameter("must be at least 1", param_hint="--limit")
    values = [None if v.strip().lower() in ("full", "none") else v for v in thresholds.split(",") if v.strip()]
    try:
        thr = [None if v is None else float(v) for v in values]
    except ValueError:
        raise click.BadParameter(f"give numbers or 'full', got {thresholds!r}", param_hint="--thresholds") from None
    if preset_name is not None:
        job = latent_job(preset_name, ckpt, first_stage, images, thr or [None], seed, ex["device"], limit,
                         model=model, model_options=model_options, metric_convention=metric_convention)
        return run_job(job, ex["out"] or "results/quality-latent.jsonl")
    kw = _ablation_cell_kwargs(ex)
    cells = quality_cells(ckpt, model=model, data=images, limit=limit, image_size=image_size, scale=scale,
                          thresholds=thr or [None], seed=seed, tile=_tile(tile),
                          samplers=_choices(samplers, SAMPLERS, "--samplers"),
                          posteriors=_choices(posteriors, POSTERIOR_MODES, "--posteriors"),
                          ensembles=_int_list(ensemble, "--ensemble"), metric_convention=metric_convention, **kw)
    _run_ablation("quality", cells, ("params", "macs", "quality"), ex)


# -- training ------------------------------------------------------------------------------------------------------

EPILOG_TRAIN = """\b
Examples:
  qdm-bench train                                   # qdm-t on CT slices and phantoms, 64x64 crops, 2000 steps
  qdm-bench train -m qdm-t --steps 300 --run-dir runs/qdm-t-quick
  qdm-bench train -m unet --images ./my_images --crop 128 --batch 4
Re-running the same command resumes from RUN_DIR/last.pt.
"""


@click.command(epilog=EPILOG_TRAIN)
@renamed("--model", to="model", new_flag="-m/--models")
@renamed("--out", "-o", to="out_dir", new_flag="--run-dir", type=click.Path(file_okay=False))
@click.option("--models", "-m", "model", default="qdm-t", show_default=True, help="Registered model to train.")
@click.option("--images", "-i", default="ct", show_default=True,
              help="Image set (builtin, natural, medical, ct, phantoms) or a folder of images.")
@click.option("--image-size", type=click.IntRange(min=1), default=256, show_default=True, help="Images are resized to this side.")
@click.option("--holdout", type=click.IntRange(min=0), default=2, show_default=True,
              help="The last N images are held out of training (quality is measured on them).")
@click.option("--crop", type=click.IntRange(min=1), default=64, show_default=True, help="Training crop side (HR pixels).")
@click.option("--scale", type=click.IntRange(min=1), default=4, show_default=True, help="LR degradation factor (bicubic).")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True, help="AdamW learning rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ckpt-every", type=click.IntRange(min=1), default=250, show_default=True, help="Checkpoint period (steps).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: torch's).")
@click.option("--run-dir", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder for checkpoints (default runs/<model>).")
@click.option("--prediction", type=click.Choice(["x0", "residual", "preconditioned"]), default="x0",
              show_default=True,
              help="ResShift family: predict x0 (as QDM), the residual x0 - y0 (starts at bicubic quality), or the "
                   "residual with an EDM-style skip from x_t (see qdm_bench/evaluate/train.py).")
@click.option("--kappa", type=float, default=None,
              help="ResShift family: noise scale κ (default 2.0 as QDM; smaller is easier to learn quickly).")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="Learning-rate schedule (cosine: decays to 0 at --steps).")
@click.option("--no-resume", is_flag=True, help="Start from scratch even if RUN_DIR/last.pt exists (it is overwritten).")
@click.option("--log-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Off a terminal (CI, Slurm, a log file): a progress line every this many steps.")
def train(model, images, image_size, holdout, crop, scale, batch, steps, lr, seed, ckpt_every, threads, out_dir,
          prediction, kappa, lr_schedule, no_resume, log_every) -> None:
    """Train a model with its diffusion objective (QDM: Eq. 6) on random crops of an image set; resumable."""
    from qdm_bench.evaluate.train import TrainConfig
    from qdm_bench.evaluate.train import train as run_training

    model = one_model(model)

    cfg = TrainConfig(model=model, images=images, image_size=image_size, holdout=holdout, crop=crop, scale=scale,
                      batch=batch, steps=steps, lr=lr, seed=seed, ckpt_every=ckpt_every, threads=threads,
                      prediction=prediction, kappa=kappa, lr_schedule=lr_schedule)
    if kappa is not None and not kappa > 0:
        raise click.BadParameter(f"must be > 0, got {kappa}", param_hint="--kappa")
    out = out_dir or f"runs/{model.replace('/', '_').replace(':', '_')}"
    from qdm_bench.evaluate.train import TrainingInterrupted, read_checkpoint

    try:
        last = _train_with_progress(cfg, out, not no_resume, log_every, run_training)
    except TrainingInterrupted as e:
        click.echo(f"train {model}: {e}; re-run the same command to resume", err=True)
        sys.exit(128 + e.signum)

    ckpt = read_checkpoint(last)
    seconds = ckpt.get("train_seconds")  # absent in checkpoints written before it was recorded
    timing = "" if seconds is None else f" in {seconds:.0f} s of wall time, {ckpt.get('train_threads')} threads"
    click.echo(f"checkpoint: {last} ({ckpt['step']} steps trained{timing})")



def _train_with_progress(cfg, out: str, resume: bool, log_every: int, run_training):
    """Run training with a bar on a terminal, or a line every ``log_every`` steps (step, loss, steps/s, ETA)."""
    import time

    from qdm_bench.cli.progress import _duration

    state = {"avg": None, "t0": None, "first": None}
    if sys.stderr.isatty():
        with click.progressbar(length=cfg.steps, label=f"train {cfg.model}", file=sys.stderr, show_pos=True,
                               item_show_func=lambda s: s) as bar:
            def progress(step: int, loss: float) -> None:
                state["avg"] = loss if state["avg"] is None else 0.98 * state["avg"] + 0.02 * loss
                bar.update(step - bar.pos, f"loss {state['avg']:.4f}")

            return run_training(cfg, out, resume=resume, progress=progress)

    def log(step: int, loss: float) -> None:
        state["avg"] = loss if state["avg"] is None else 0.98 * state["avg"] + 0.02 * loss
        now = time.perf_counter()
        if state["t0"] is None:
            state["t0"], state["first"] = now, step
            return
        if step % log_every and step != cfg.steps:
            return
        rate = (step - state["first"]) / max(now - state["t0"], 1e-9)
        click.echo(f"train {cfg.model}: step {step}/{cfg.steps}, loss {loss:.4f} (avg {state['avg']:.4f}), "
                   f"{rate:.2f} steps/s, ETA {_duration((cfg.steps - step) / rate if rate else 0.0)}", err=True)

    return run_training(cfg, out, resume=resume, progress=log)
