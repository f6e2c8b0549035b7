"""``qdm-bench pgs``: PatchScaler-style patch-adaptive group sampling of one image, next to uniform sampling.

The command is a plain Click command (:func:`pgs_cmd`); the main group registers it with ``main.add_command``.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from qdm_bench.cli.execute import _command_line
from qdm_bench.cli.options import metric_convention_option, one_model, renamed
from qdm_bench.errors import ConfigError

__all__ = ["pgs_cmd"]

EPILOG_PGS = """\b
Examples:
  qdm-bench pgs                                        # qdm-s, random weights: costs only
  qdm-bench pgs --ckpt runs/qdm-t/last.pt              # trained weights: PSNR of PGS, uniform and bicubic too
  qdm-bench pgs --ckpt runs/qdm-t/last.pt --metric-convention published   # MATLAB LR, uint8 PSNR
  qdm-bench pgs -m qdm-t --estimator range --group-steps 2,6,15 --t-start 3,8,14
  qdm-bench pgs -m qdm-t --quantiles 0.6,0.3,0.1 --image ct:shepp_logan --image-size 256 --patch-size 64 --overlap 16
  qdm-bench pgs -m qdm-t --device cuda --patch-batch 64 -o results/pgs.jsonl
"""

MiB = 2 ** 20


def _numbers(text: str | None, kind: type, hint: str):
    """Comma-separated numbers of one type, or None when not given."""
    if text is None:
        return None
    try:
        values = tuple(kind(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"give comma-separated {kind.__name__}s, got {text!r}", param_hint=hint) from None
    if not values:
        raise click.BadParameter("give at least one value", param_hint=hint)
    return values


def _policy_mode(policy: str | None, thresholds, quantiles) -> str:
    """The policy mode: as given, else inferred from --thresholds / --quantiles (default thresholds)."""
    if thresholds is not None and quantiles is not None:
        raise click.UsageError("give --gammas or --quantiles, not both")
    inferred = "quantiles" if quantiles is not None else "thresholds"
    if policy is None:
        return inferred
    if (policy == "thresholds" and quantiles is not None) or (policy == "quantiles" and thresholds is not None):
        raise click.UsageError(f"--policy {policy} does not take --{'quantiles' if quantiles else 'gammas'}; "
                               f"drop one of them")
    return policy


def _estimator_kwargs(estimator: str, value: float | None) -> dict:
    """--estimator-param: the quadtree threshold s, or the gradient/residual normalisation scale."""
    if value is None:
        return {}
    if estimator == "range":
        raise click.BadParameter("the range estimator has no parameter (D = 1 - range/2)",
                                 param_hint="--estimator-param")
    return {"threshold": value} if estimator == "quadtree" else {"scale": value}


def _load_model(model: str | None, ckpt: str | None, seed: int):
    """(network, name, training config): the checkpoint's model, or a registered model with seeded random weights."""
    import torch

    from qdm_bench.registry import create_model

    if ckpt is not None:
        from qdm_bench.evaluate.train import load_checkpoint

        net, meta = load_checkpoint(ckpt, model)
        return net, str(meta["model"]), meta.get("config") or {}
    torch.manual_seed(seed)
    name = model or "qdm-s"
    return create_model(name), name, {}


def _mib(value) -> str:
    return "" if value is None else f"{value / MiB:,.1f}"


def _secs(value) -> str:
    return "" if value is None else f"{value:.3f}"


@click.command("pgs", epilog=EPILOG_PGS)
@renamed("--model", to="model", new_flag="-m/--models")
@renamed("--patch", to="patch", new_flag="--patch-size", type=int)
@renamed("--window", to="window", new_flag="--blend", type=click.Choice(["hann", "linear"]))
@renamed("--thresholds", to="thresholds", new_flag="--gammas")
@renamed("--steps", to="steps", new_flag="--group-steps")
@click.option("--models", "-m", "model", default=None,
              help="Registered model (default qdm-s; with --ckpt: the checkpoint's).")
@click.option("--image", default="ct:ct_phantom_0", show_default=True,
              help="A built-in image (set:name, e.g. ct:shepp_logan, natural:astronaut) or an image file.")
@click.option("--image-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="HR side: centre-cropped square resized to it, then degraded by --scale.")
@click.option("--scale", type=click.IntRange(min=1), default=4, show_default=True, help="Bicubic degradation / SR factor.")
@click.option("--patch-size", "patch", type=click.IntRange(min=1), default=32, show_default=True,
              help="HR patch side; a multiple of --scale and of the model's input multiple [assumed].")
@click.option("--overlap", type=click.IntRange(min=0), default=8, show_default=True,
              help="HR overlap of neighbouring patches; a multiple of --scale [assumed].")
@click.option("--patch-batch", type=click.IntRange(min=1), default=16, show_default=True, help="Most patches per model call.")
@click.option("--blend", "window", type=click.Choice(["hann", "linear"]), default="hann", show_default=True,
              help="Overlap blending window.")
@click.option("--estimator", type=click.Choice(["quadtree", "range", "gradient", "residual"]), default="quadtree",
              show_default=True,
              help="Difficulty D (1 = easy): quadtree = share of QDM-homogeneous 2x2 LR blocks; range = 1 - patch "
                   "range/2; gradient = bicubic gradient energy; residual = |one-shot SR - bicubic| (1 extra pass).")
@click.option("--estimator-param", type=float, default=None,
              help="quadtree: threshold s (0.15); gradient / residual: normalisation scale (0.25 / 0.1).")
@click.option("--policy", type=click.Choice(["thresholds", "quantiles"]), default=None,
              help="Grouping rule (default: thresholds, or quantiles when --quantiles is given).")
@click.option("--gammas", "thresholds", default=None,
              help="Group thresholds γ1,γ2,... on D, decreasing (default 0.9,0.6 [assumed]).")
@click.option("--quantiles", default=None, help="Fraction of patches per group, easy to hard (default 0.5,0.3,0.2).")
@click.option("--group-steps", "steps", default=None,
              help="Steps N_g per group, easy to hard (default 2,6,15 [assumed]).")
@click.option("--t-start", default=None, help="Start index per group, increasing (default 3,8,14 [assumed]).")
@click.option("--ckpt", type=click.Path(dir_okay=False), default=None,
              help="Checkpoint from `qdm-bench train`; without it the weights are random and only costs mean anything.")
@metric_convention_option
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling noise (and random weights) seed.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: torch's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--no-uniform", is_flag=True, help="Skip running uniform full-image sampling (its counts still shown).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
              help="Append a JSON line with every report field to this file.")
def pgs_cmd(**kw) -> None:
    """Patch-adaptive group sampling (PatchScaler-style): per-patch difficulty → groups with their own start step and
    step count → batched patch sampling → blended SR image; costs next to uniform sampling of the full image.

    Every value the PatchScaler paper does not fix is a qdm-bench default and is listed as [assumed].
    """
    _pgs(**kw)


def _pgs(model, image, image_size, scale, patch, overlap, patch_batch, window, estimator, estimator_param, policy,
         thresholds, quantiles, steps, t_start, ckpt, metric_convention, seed, threads, device, no_uniform,
         out) -> None:
    """The body of ``qdm-bench pgs``."""
    import datetime as _dt

    model = one_model(model)
    if metric_convention != "float" and ckpt is None:
        raise click.BadParameter("the metric convention is a scoring setting; give --ckpt to score PSNR",
                                 param_hint="--metric-convention")
    if out:
        from qdm_bench.cli.execute import check_writable

        check_writable(out)

    import torch
    import torch.nn.functional as F
    from tabulate import tabulate

    from qdm_bench.measure.validate import resolve_device
    from qdm_bench.data.images import degrade, image_by_name, lr_condition
    from baselines.pgs import (GroupPolicy, PatchGroupSampler, group_map_text, make_estimator, one_shot_coarse,
                               uniform_sample)
    from qdm_bench.evaluate.pgs import family_for, peak_memory_hook
    from qdm_bench.measure.cell import LR_KERNELS

    if threads is not None:
        if threads < 1:
            raise click.BadParameter("must be at least 1", param_hint="--threads")
        torch.set_num_threads(threads)
    dev = torch.device(resolve_device(device))
    th, qs = _numbers(thresholds, float, "--gammas"), _numbers(quantiles, float, "--quantiles")
    mode = _policy_mode(policy, th, qs)
    est = make_estimator(estimator, **_estimator_kwargs(estimator, estimator_param))

    net, name, train_cfg = _load_model(model, ckpt, seed)
    net = net.eval().to(dev)
    info = net.qdm_bench_info
    family = family_for(net, info, kappa=train_cfg.get("kappa"))
    pol = GroupPolicy.default(family.schedule_len, family.uniform_steps, mode=mode, thresholds=th, quantiles=qs,
                              t_start=_numbers(t_start, int, "--t-start"), n_steps=_numbers(steps, int, "--group-steps"))
    sampler = PatchGroupSampler(net, family, pol, est, patch=patch, overlap=overlap, patch_batch=patch_batch,
                                window=window, sf=scale, multiple=getattr(net, "input_multiple", None) or info.multiple)
    measure = peak_memory_hook(dev)

    img = image_by_name(image, size=image_size, multiple=scale)
    hr = img.hr[None].to(dev)
    lr = degrade(img.hr[None], scale, kernel=LR_KERNELS[metric_convention])
    lq = lr_condition(lr).to(dev)
    height, width = hr.shape[-2:]
    if not no_uniform:
        try:
            info.check_resolution(height, width, getattr(net, "input_multiple", None))
        except ValueError as e:
            raise ConfigError(f"uniform full-image sampling: {e}, or pass --no-uniform") from None
    coarse, overhead = None, 0
    if est.needs_coarse:
        coarse, overhead = one_shot_coarse(net, lq, family, scale), 1
    res = sampler(lq, seed=seed, coarse=coarse, overhead_passes=overhead, measure=measure)
    rep = res.report
    uni = None
    sr_uniform = None
    if not no_uniform:
        tile = int(train_cfg.get("crop") or 0)  # a crop-trained model is sampled in tiles of its crop (see quality)
        if tile and (height > tile or width > tile) and not (height % tile or width % tile):
            from qdm_bench.evaluate.quality import from_tiles, to_tiles

            sr_t, uni = uniform_sample(net, to_tiles(lq, tile // scale), family, scale, seed=seed, measure=measure)
            sr_uniform = from_tiles(sr_t, height // tile, width // tile)
            uni["tile"] = tile
        else:
            sr_uniform, uni = uniform_sample(net, lq, family, scale, seed=seed, measure=measure)

    psnr = None
    if ckpt is not None:
        from qdm_bench.evaluate.quality import psnr_y

        def to01(x):
            return ((x + 1) / 2).clamp(0, 1).float()

        if metric_convention == "published":  # MATLAB's bicubic upsampling of the uint8 LR, as `quality`
            from qdm_bench.data.matlab_resize import imresize

            bicubic = imresize(lr, float(scale)).to(dev) * 2 - 1
        else:
            bicubic = F.interpolate(lq, size=(height, width), mode="bicubic", align_corners=False)

        def y(x):  # PSNR on Y with the SR border crop (= scale) and the metric convention, as `qdm-bench quality`
            return float(psnr_y(to01(x), hr, crop=scale, convention=metric_convention)[0])

        psnr = {"pgs": y(res.sr), "bicubic": y(bicubic), "uniform": None if sr_uniform is None else y(sr_uniform)}

    # -- output
    m_total = rep.patches
    click.echo(f"PGS on {image} ({height}x{width}, x{scale}) with {name} [{rep.family}] on {dev}: "
               f"{rep.grid[0]}x{rep.grid[1]} patches of {patch} px, overlap {overlap} (coverage "
               f"{rep.coverage:.2f}x), estimator {rep.estimator}, {pol.mode}")
    rows = [[g.group, g.name, g.patches, f"{g.patches / m_total:.2f}", g.t_start, g.n_steps,
             ",".join(map(str, g.timesteps)), g.patch_evals, g.model_calls] for g in rep.groups]
    click.echo(tabulate(rows, headers=["group", "name", "M_g", "share", "t_start", "N_g", "timesteps",
                                       "M_g·N_g", "model calls"], tablefmt="simple", disable_numparse=True))
    click.echo("")
    u_nfe = rep.uniform_nfe
    totals = [
        ["patch evaluations Σ M_g·N_g", rep.patch_evals, ""],
        ["full-image-eq NFE Σ (M_g/M)·N_g", f"{rep.full_image_eq_nfe:.2f}", u_nfe],
        ["pixel-eq NFE Σ M_g·N_g·P²/(H·W)", f"{rep.pixel_eq_nfe:.2f}", u_nfe],
        ["model calls Σ ⌈M_g/B⌉·N_g", rep.model_calls, rep.uniform_model_calls],
        ["overhead passes", rep.overhead_passes, 0],
        ["peak memory (MiB)", _mib(rep.peak_memory_bytes), _mib(uni and uni["peak_memory_bytes"])],
        ["wall time (s)", _secs(rep.wall_time_s), _secs(uni and uni["wall_time_s"])],
    ]
    if psnr is not None:
        totals.append(["PSNR-Y vs HR (dB)", f"{psnr['pgs']:.2f}",
                       "" if psnr["uniform"] is None else f"{psnr['uniform']:.2f}"])
        totals.append(["PSNR-Y bicubic (dB)", f"{psnr['bicubic']:.2f}", f"{psnr['bicubic']:.2f}"])
    click.echo(tabulate(totals, headers=["", "PGS", f"uniform {u_nfe}-step"], tablefmt="simple",
                        disable_numparse=True))
    if rep.grid[1] <= 48:
        click.echo("\ngroup map (. simple, o medium, # hard):\n" + group_map_text(res.group_map))
    notes = []
    if ckpt is None:
        notes.append(f"{name} has random weights (seed {seed}): only the counts, memory and time are meaningful; pass "
                     "--ckpt from `qdm-bench train` for quality.")
    if uni and uni.get("tile"):
        notes.append(f"uniform sampling ran in independent {uni['tile']}x{uni['tile']} tiles (the checkpoint's "
                     "training crop, whose positions its embeddings have seen), batched.")
    if psnr is not None and metric_convention == "published":
        notes.append("PSNR in the published convention: LR by MATLAB-compatible bicubic (imresize), SR and HR rounded "
                     "to uint8 before scoring, bicubic by MATLAB's upsampling.")
    if rep.coverage > 1:
        notes.append(f"overlapping patches cover {rep.coverage:.2f}x the image, so pixel-eq NFE = "
                     f"{rep.coverage:.2f} x full-image-eq NFE.")
    if rep.memory_method:
        notes.append(f"peak memory: {rep.memory_method} (growth during the run; on CPU the resident-set high-water "
                     "mark, best effort)." + (" Uniform sampling skipped (--no-uniform)." if no_uniform else ""))
    notes += [f"assumed: {a}" for a in rep.assumptions]
    for n in notes:
        click.echo(n, err=True)

    if out:
        row = {"command": _command_line(), "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(
            timespec="seconds"), "model": name, "ckpt": ckpt, "image": image, "seed": seed,
            **rep.to_dict(), "uniform": uni, "psnr_y": psnr, "metric_convention": metric_convention}
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        click.echo(f"report appended to {path}", err=True)
