"""``qdm-bench ablate``: the paper's ablation sweeps (Tables 3, 4, 6) and cost vs resolution."""
from __future__ import annotations


import click

from qdm_bench.cli.execute import _ablation_cell_kwargs, _run_ablation
from qdm_bench.cli.sr import latent_job, preset_options, run_job
from qdm_bench.cli.options import (POSTERIOR_MODES, _ablation_metrics, _float_list, _int_list, _tile, execution_options,
                                   metric_convention_option, one_model, renamed, tile_option)


@click.group()
def ablate() -> None:
    """Ablation sweeps of the paper (Tables 3, 4, 6) and cost vs resolution; resumable, one results file.

    \b
    Examples:
      qdm-bench ablate threshold --images builtin --limit 4
      qdm-bench ablate window -m qdm-b --res 128
      qdm-bench ablate patch -m qdm-b --res 128
      qdm-bench ablate res --res 256,512,1024,2048
    """


EPILOG_THRESHOLD = """\b
Examples:
  qdm-bench ablate threshold                                  # QDM-L, built-in images, default thresholds
  qdm-bench ablate threshold -m qdm-s --images ct --scale 8 --thresholds 0,0.15,0.9
  qdm-bench ablate threshold --images ./my_slices --speed --res 64
  qdm-bench ablate threshold -m qdm-t --images ct --image-size 256 --ckpt runs/qdm-t/last.pt --posterior reference
"""


@ablate.command("threshold", epilog=EPILOG_THRESHOLD)
@renamed("--model", to="model", new_flag="-m/--models")
@click.option("--models", "-m", "model", default="qdm-l", show_default=True,
              help="The QDM model (Tables 3 and 6 use QDM-L).")
@click.option("--images", "-i", default="builtin", show_default=True,
              help="A built-in image set (builtin, natural, medical, ct, phantoms) or a folder / file of "
                   "PNG/JPEG/TIFF/DICOM images.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use at most this many images.")
@click.option("--image-size", type=click.IntRange(min=1), default=512, show_default=True,
              help="HR side: images are center-cropped to a square and resized to it before degradation.")
@click.option("--scale", type=click.IntRange(min=1), default=4, show_default=True, help="LR degradation: bicubic down-scaling factor.")
@click.option("--res", "res", default=None,
              help="Model input; default 128 (the paper's 128x128 latent tile; the mask is pooled from the LR image "
                   "to its grid), or the image size with --ckpt (pixel space).")
@click.option("--thresholds", default="0,0.03,0.06,0.09,0.15,0.3,0.6,0.9", show_default=True,
              help="Comma-separated thresholds (LR images in [-1, 1]).")
@click.option("--ckpt", type=click.Path(dir_okay=False), default=None,
              help="Trained checkpoint: also super-resolve every image at every threshold and score PSNR/SSIM "
                   "(Table 3 end to end).")
@click.option("--speed", is_flag=True, help="Also measure latency of every cell (slow on CPU).")
@click.option("--memory", is_flag=True, help="Also measure (or estimate) peak memory.")
@tile_option
@click.option("--posterior", type=click.Choice(POSTERIOR_MODES), default=None,
              help="With --ckpt: reverse step on inactive sites, 'paper' (Eq. 4, the default) or 'reference' (the "
                   "authors' code: the posterior mean everywhere).")
@metric_convention_option
@preset_options
@execution_options
def ablate_threshold(model, images, limit, image_size, scale, res, thresholds, ckpt, speed, memory, tile, posterior,
                     metric_convention, preset_name, first_stage, model_options, **ex) -> None:
    """Threshold sweep: per image, the full-mask row first, then each threshold: density, active windows, MACs.

    With --preset, --ckpt and --first-stage: the authors' checkpoints super-resolve every image at every threshold
    through their latent pipeline (Table 3 end to end, as `qdm-bench sr --from-hr`).
    """
    model = one_model(model)
    if metric_convention != "float" and not ckpt:
        raise click.BadParameter("the metric convention is a scoring setting; give --ckpt to sample and score",
                                 param_hint="--metric-convention")
    if preset_name is not None:
        if ckpt is None:
            raise click.BadParameter("--preset needs the authors' QDM checkpoint", param_hint="--ckpt")
        job = latent_job(preset_name, ckpt, first_stage, images, _float_list(thresholds, "--thresholds"),
                         0, ex["device"], limit, model=model if model_options or model != "qdm-l" else None,
                         model_options=model_options, metric_convention=metric_convention)
        return run_job(job, ex["out"] or "results/ablate-threshold-latent.jsonl")
    from qdm_bench.ablate import threshold_cells
    from qdm_bench.data.images import image_keys
    from qdm_bench.measure.sweep import parse_resolution

    if limit is not None and limit < 1:
        raise click.BadParameter("must be at least 1", param_hint="--limit")
    if scale < 1 or image_size < scale:
        raise click.BadParameter(f"need 1 <= scale <= image size, got scale {scale}", param_hint="--scale")
    size = parse_resolution(res or (str(image_size) if ckpt else "128"))
    if ckpt and size != (image_size, image_size):
        raise click.BadParameter(f"with --ckpt the model super-resolves the {image_size}x{image_size} image itself; "
                                 f"leave --res unset or give --res {image_size}", param_hint="--res")
    keys = image_keys(images, limit=limit)
    metrics = _ablation_metrics(speed, memory) + (("quality",) if ckpt else ())
    kw = _ablation_cell_kwargs(ex)
    if posterior and not ckpt:
        raise click.BadParameter("the posterior is a sampler setting; give --ckpt to sample", param_hint="--posterior")
    if ckpt:
        from qdm_bench.evaluate.quality import check_checkpoint, checkpoint_tile

        check_checkpoint(ckpt, model)
        kw["tile"] = checkpoint_tile(ckpt, _tile(tile))
        posterior = posterior or "paper"
        kw["metric_convention"] = metric_convention
    cells = threshold_cells(model, keys, size, _float_list(thresholds, "--thresholds"), metrics,
                            image_size=image_size, scale=scale, ckpt=ckpt, posterior=posterior, **kw)
    _run_ablation("ablate-threshold", cells, metrics, ex)


def _simple_ablation(kind: str):
    """Build the window or patch ablation command (Table 4)."""
    default = {"window": "4,8,16", "patch": "4,8"}[kind]
    plural = {"window": "windows", "patch": "patches"}[kind]
    epilog = f"""\b
Examples:
  qdm-bench ablate {kind} -m qdm-b --res 128
  qdm-bench ablate {kind} -m qdm-s --res 256 --{plural} {default} --speed --device cpu
"""

    @renamed("--model", to="model", new_flag="-m/--models")
    @click.option("--models", "-m", "model", default="qdm-b", show_default=True,
                  help="The QDM model (Table 4 uses QDM-B).")
    @click.option("--res", "res", default="128", show_default=True, help="Model input resolution, N or HxW.")
    @click.option(f"--{plural}", "values", default=default, show_default=True, help=f"Comma-separated {kind} sizes.")
    @click.option("--threshold", "-s", type=float, default=None,
                  help="Quadtree threshold on the built-in synthetic LR image (default: full mask, dense).")
    @click.option("--speed", is_flag=True, help="Also measure latency (slow on CPU).")
    @click.option("--memory", is_flag=True, help="Also measure (or estimate) peak memory.")
    @execution_options
    def command(model, res, values, threshold, speed, memory, **ex) -> None:
        from qdm_bench import ablate as ab
        from qdm_bench.measure.sweep import parse_resolution

        model = one_model(model)
        metrics = _ablation_metrics(speed, memory)
        kw = _ablation_cell_kwargs(ex)
        build = ab.window_cells if kind == "window" else ab.patch_cells
        cells = build(model, parse_resolution(res), _int_list(values, f"--{plural}"), metrics,
                      thresholds=(threshold,), **kw)
        _run_ablation(f"ablate-{kind}", cells, metrics, ex)

    command.__doc__ = ("Downstream window sizes (Table 4)." if kind == "window" else
                       "Upstream patch sizes (Table 4).") + " Parameters, MACs, density; --speed adds latency."
    return ablate.command(kind, epilog=epilog)(command)


_simple_ablation("window")
_simple_ablation("patch")

EPILOG_RES = """\b
Examples:
  qdm-bench ablate res                                         # Figure-5 set, 256..2048, MACs + memory
  qdm-bench ablate res -m "qdm-s,dit-s/8" --res 256,512 --speed --device cpu
"""


@ablate.command("res", epilog=EPILOG_RES)
@click.option("--models", "-m", "models", multiple=True, metavar="NAMES",
              help="Names or wildcards, comma-separated (default: the Figure-5 set).")
@click.option("--res", "res", default="256,512,1024,2048", show_default=True, help="Comma-separated resolutions.")
@click.option("--speed", is_flag=True, help="Also measure latency (on CPU only up to --cpu-max-res).")
@click.option("--no-memory", is_flag=True, help="Skip peak memory (measured on CUDA, estimated on CPU).")
@execution_options
def ablate_res(models, res, speed, no_memory, **ex) -> None:
    """Cost of each model from 256x256 to 2048x2048: parameters, MACs, peak memory (and speed)."""
    from qdm_bench.ablate import res_cells
    from qdm_bench.measure.sweep import expand_models, parse_resolution

    metrics = _ablation_metrics(speed, not no_memory)
    kw = _ablation_cell_kwargs(ex)
    resolutions = [parse_resolution(r) for r in res.split(",") if r.strip()]
    cells = res_cells(expand_models(models), resolutions, metrics, **kw)
    _run_ablation("ablate-res", cells, metrics, ex)

