"""Options shared by the commands, and the parsers of comma-separated option values."""
from __future__ import annotations


import click

POSTERIOR_MODES = ("paper", "reference")  # = qdm.diffusion.POSTERIOR_MODES (a test checks), kept import-free for --help
SAMPLERS = ("stochastic", "deterministic")
METRIC_CONVENTIONS = ("float", "published")  # = qdm_bench.measure.cell.METRIC_CONVENTIONS (a test checks)


def _res_list(values: tuple[str, ...], default: str) -> list[tuple[int, int]]:
    from qdm_bench.measure.sweep import parse_resolution

    return [parse_resolution(v) for v in (values or (default,))]


def measurement_options(default_res: str | None = "1024"):
    """The options shared by params / macs / memory / speed / run."""

    def deco(fn):
        opts = [
            click.option("--models", "-m", "models", multiple=True, metavar="NAMES",
                         help="Comma-separated names, wildcards (\"dit-*/8\") or package.module:factory; repeatable. "
                              "Default: the Figure-5 set qdm-s,qdm-b,qdm-l,dit-s/8,dit-l/8,dit-s/2,unet,swin-unet."),
            click.option("--res", "-r", "res", multiple=True, metavar="SIZE",
                         help="Input resolution, N or HxW; repeatable. Default: "
                              + (default_res or "1024 on CUDA, 128 on CPU") + "."),
            click.option("--batch", "-b", "batches", multiple=True, type=click.IntRange(min=1),
                         help="Batch size; repeatable. Default 1."),
            click.option("--dtype", "dtypes", multiple=True, type=click.Choice(["fp32", "bf16", "fp16"]),
                         help="fp32, or bf16/fp16 autocast (weights stay fp32); repeatable. Default fp32."),
            click.option("--threshold", "-s", "thresholds", multiple=True, type=float,
                         help="QDM: quadtree threshold on the LR test image (Alg. 1, images in [-1, 1]); repeatable."),
            click.option("--density", "-d", "densities", multiple=True, type=float,
                         help="QDM: fraction of downstream windows selected at random (seeded); repeatable. "
                              "Without --threshold/--density QDM runs its dense path (full mask, as in Figure 5)."),
            click.option("--image", type=click.Path(dir_okay=False), default=None,
                         help="LR image for --threshold masks (PNG/JPEG/TIFF). Default: a built-in synthetic image."),
            click.option("--window", type=click.IntRange(min=1), default=None, help="QDM: downstream window size (ablation)."),
            click.option("--patch", type=click.IntRange(min=1), default=None, help="QDM: upstream patch; DiT: patch (ablation)."),
            click.option("--chunk-size", type=click.IntRange(min=1), default=None, help="QDM: windows per chunk (default 64)."),
        ]
        fn = execution_options(fn)  # applied first, so listed after the selection options in --help
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return deco


tile_option = click.option(  # quality and ablate threshold --ckpt
    "--tile", default="auto", show_default=True,
    help="Sample in independent tiles of this HR side ('auto': the checkpoint's training crop, which its position "
         "embeddings have seen; 0: the whole image at once).")


metric_convention_option = click.option(  # quality, ablate threshold, sr, pgs: one name for the switch
    "--metric-convention", "metric_convention", type=click.Choice(METRIC_CONVENTIONS), default="float",
    show_default=True,
    help="float: SR scored as floats, LR by torch antialiased bicubic; published: LR by MATLAB-compatible bicubic "
         "(imresize), SR and HR rounded to uint8 before scoring, as published SR tables.")


def execution_options(fn):
    """Options of every command that runs cells: device, results file, isolation, executor, timing budget."""
    opts = [
            click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                         help="auto = cuda when available, else cpu."),
            click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
                         help="Results file (JSON lines), appended as cells finish; re-running resumes. "
                              "Default results/<command>.jsonl."),
            click.option("--threads", type=click.IntRange(min=1), default=None,
                         help="CPU threads per cell (default 1 on CPU: stable timings on shared machines)."),
            click.option("--cpu-max-res", type=click.IntRange(min=0), default=256, show_default=True,
                         help="On CPU, real memory/speed runs only up to this side; above it memory is estimated "
                              "(meta-device trace) and speed is skipped. Raise it to force slow CPU runs."),
            click.option("--compile", "use_compile", is_flag=True, help="Measure torch.compile(model)."),
            click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True, help="Warm-up forwards (speed)."),
            click.option("--reps", type=click.IntRange(min=1), default=30, show_default=True, help="Timed forwards (speed)."),
            click.option("--max-time", type=float, default=60.0, show_default=True,
                         help="Stop timing a cell after this many seconds (at least 3 reps)."),
            click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=3600.0, show_default=True,
                         help="Seconds before a cell's subprocess is killed (recorded as an error row)."),
            click.option("--isolate", type=click.Choice(["auto", "always", "never"]), default="auto",
                         show_default=True,
                         help="Fresh subprocess per cell: auto = for cells that run real tensors (memory, speed)."),
            click.option("--format", "fmt", type=click.Choice(["simple", "github", "latex"]), default="simple",
                         show_default=True, help="Summary table format."),
            click.option("--summary", type=click.Path(dir_okay=False), default=None,
                         help="Also write the summary (command, device, software, table, notes) as Markdown here."),
            click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
                         help="Local executor: cells measured at once, each in its own process (timings interfere "
                              "on small machines; use 1 for speed)."),
            click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
                         help="slurm: one job per cell through submitit (pip install submitit), one GPU each."),
            click.option("--slurm-partition", default=None, help="Slurm partition for --executor slurm."),
            click.option("--slurm-time", type=click.IntRange(min=1), default=60, show_default=True,
                         help="Slurm time limit per cell, minutes."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"give comma-separated integers, got {text!r}", param_hint=what) from None
    if not values or any(v <= 0 for v in values):
        raise click.BadParameter(f"give positive integers, got {text!r}", param_hint=what)
    return values


def _float_list(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"give comma-separated numbers, got {text!r}", param_hint=what) from None
    if not values:
        raise click.BadParameter("give at least one value", param_hint=what)
    return values


def _ablation_metrics(speed: bool, memory: bool) -> tuple[str, ...]:
    return ("params", "macs") + (("memory",) if memory else ()) + (("speed",) if speed else ())


def _choices(text: str, allowed: tuple[str, ...], hint: str) -> list[str]:
    """A comma-separated, non-empty subset of ``allowed`` (--samplers, --posteriors)."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    if not names or any(n not in allowed for n in names):
        raise click.BadParameter(f"use {' and/or '.join(allowed)}, got {text!r}", param_hint=hint)
    return names


def _tile(text: str) -> int | str | None:
    """--tile: 'auto', or a non-negative integer (0 = whole image)."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter(f"give 'auto' or a tile side in pixels, got {text!r}", param_hint="--tile") from None
    if value < 0:
        raise click.BadParameter("must be 0 (whole image) or a positive side", param_hint="--tile")
    return value



def renamed(*flags: str, to: str, new_flag: str, **option_kwargs):
    """Decorator: hidden option ``flags``, the old spelling of ``new_flag`` (parameter ``to``), kept for one release.

    A value given under the old spelling is used as if given under the new one, with a one-line note on stderr.
    """
    import functools

    hidden = "renamed_" + flags[0].lstrip("-").replace("-", "_") + "_to_" + to

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            value = kwargs.pop(hidden, None)
            if value not in (None, ()):
                click.echo(f"note: {'/'.join(flags)} is now {new_flag} (the old spelling goes away in the next "
                           "release)", err=True)
                kwargs[to] = value
            return fn(*args, **kwargs)

        return click.option(*flags, hidden, hidden=True, default=None, **option_kwargs)(wrapper)

    return deco


def one_model(value: str | None, option: str = "--models") -> str | None:
    """The single model a command takes from ``-m/--models`` (refuses lists and wildcards with one line)."""
    if value is None:
        return None
    value = value.strip()
    if "," in value or (":" not in value and any(ch in value for ch in "*?[")):
        raise click.BadParameter(f"this command takes one model, got {value!r}; give a single name",
                                 param_hint=option)
    return value
