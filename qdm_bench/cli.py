"""The ``qdm-bench`` command line: a thin Click layer over the importable library."""
from __future__ import annotations

import sys

import click

from qdm_bench import __version__

POSTERIOR_MODES = ("paper", "reference")  # = qdm.diffusion.POSTERIOR_MODES (a test checks), kept import-free for --help
SAMPLERS = ("stochastic", "deterministic")

EPILOG_MODELS = """\b
Examples:
  qdm-bench models
  qdm-bench models --filter "qdm-*"
  qdm-bench models --filter "dit-*/8" --format csv
"""


class FriendlyGroup(click.Group):
    """Click group that turns library errors (bad names, sizes, values) into one clear line, without a traceback."""

    def make_context(self, info_name, args, parent=None, **extra):
        """Keep the command line as given (recorded in results rows and reports)."""
        argv = list(args)
        ctx = super().make_context(info_name, args, parent=parent, **extra)
        if parent is None:
            ctx.meta["qdm_bench.argv"] = argv
        return ctx

    def invoke(self, ctx: click.Context):
        from qdm_bench.registry import ModelError

        from qdm_bench.results import ResultsError

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # --help / --version exits, Ctrl-C and Click's own usage errors keep their behaviour
        except torch_oom_types() as e:
            raise click.ClickException(f"out of memory: {_first_line(e)}; lower --res or --batch, or use a device "
                                       "with more memory") from None
        except (ModelError, ResultsError, ValueError, FileNotFoundError, ImportError, RuntimeError) as e:
            raise click.ClickException(_first_line(e)) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def torch_oom_types() -> tuple[type, ...]:
    """Out-of-memory exception types (torch's when importable)."""
    import torch

    return (torch.OutOfMemoryError, MemoryError)


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qdm-bench")
def main() -> None:
    """qdm-bench: measure and compare efficient diffusion super-resolution models (QDM and baselines).

    \b
    Examples:
      qdm-bench models                  # every registered model with its parameter counts
      qdm-bench models --filter "qdm-*"
      qdm-bench macs --res 1024         # exact MACs of the Figure-5 set
      qdm-bench memory --res 1024       # peak memory (estimated on a CPU-only machine)
      qdm-bench run --res 128 --models "qdm-s,dit-s/8,unet,swin-unet"
    """


@main.command(epilog=EPILOG_MODELS)
@click.option("--filter", "patterns", multiple=True, metavar="GLOB",
              help="Shell-style wildcard on model names (repeatable, or comma-separated).")
@click.option("--model", "extra", multiple=True, metavar="MODULE:FACTORY",
              help="Also list a user model given as package.module:factory.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "markdown"]), default="table",
              show_default=True, help="Output format.")
def models(patterns: tuple[str, ...], extra: tuple[str, ...], fmt: str) -> None:
    """List registered models: family, space, input multiple and parameter counts (learnable; paper convention).

    Parameters are counted on the meta device, so listing is instant and allocates no weights.
    "params_paper" is the paper's own convention where one exists (QDM: Table 5, i.e. learnable parameters plus
    the frozen sin-cos tables at the 128x128 build size).
    """
    import pandas as pd
    from tabulate import tabulate

    from qdm_bench.params import model_summary
    from qdm_bench.registry import list_models, resolve

    pats = [p.strip() for pat in patterns for p in pat.split(",") if p.strip()]
    names = list_models(pats or None)
    names += [resolve(spec).name for spec in extra]
    if not names:
        raise click.ClickException(f"no registered model matches {', '.join(pats)}; run `qdm-bench models` "
                                   "without --filter to see them all")
    df = pd.DataFrame([model_summary(n) for n in names])
    df["params_paper"] = df["params_paper"].astype("Int64")
    if fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
        return
    table = df.drop(columns=["buffers"]).astype(object)
    table = table.where(table.notna(), "")
    click.echo(tabulate(table, headers="keys", tablefmt="github" if fmt == "markdown" else "simple",
                        showindex=False, intfmt=","))


# -- measurement commands ----------------------------------------------------------------------------------------

def _res_list(values: tuple[str, ...], default: str) -> list[tuple[int, int]]:
    from qdm_bench.sweep import parse_resolution

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
            click.option("--batch", "-b", "batches", multiple=True, type=int,
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
            click.option("--window", type=int, default=None, help="QDM: downstream window size (ablation)."),
            click.option("--patch", type=int, default=None, help="QDM: upstream patch; DiT: patch (ablation)."),
            click.option("--chunk-size", type=int, default=None, help="QDM: windows per chunk (default 64)."),
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


def execution_options(fn):
    """Options of every command that runs cells: device, results file, isolation, executor, timing budget."""
    opts = [
            click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                         help="auto = cuda when available, else cpu."),
            click.option("--out", "-o", type=click.Path(dir_okay=False), default=None,
                         help="Results file (JSON lines), appended as cells finish; re-running resumes. "
                              "Default results/<command>.jsonl."),
            click.option("--threads", type=int, default=None,
                         help="CPU threads per cell (default 1 on CPU: stable timings on shared machines)."),
            click.option("--cpu-max-res", type=int, default=256, show_default=True,
                         help="On CPU, real memory/speed runs only up to this side; above it memory is estimated "
                              "(meta-device trace) and speed is skipped. Raise it to force slow CPU runs."),
            click.option("--compile", "use_compile", is_flag=True, help="Measure torch.compile(model)."),
            click.option("--warmup", type=int, default=10, show_default=True, help="Warm-up forwards (speed)."),
            click.option("--reps", type=int, default=30, show_default=True, help="Timed forwards (speed)."),
            click.option("--max-time", type=float, default=60.0, show_default=True,
                         help="Stop timing a cell after this many seconds (at least 3 reps)."),
            click.option("--timeout", type=float, default=3600.0, show_default=True,
                         help="Seconds before a cell's subprocess is killed (recorded as an error row)."),
            click.option("--isolate", type=click.Choice(["auto", "always", "never"]), default="auto",
                         show_default=True,
                         help="Fresh subprocess per cell: auto = for cells that run real tensors (memory, speed)."),
            click.option("--format", "fmt", type=click.Choice(["simple", "github", "latex"]), default="simple",
                         show_default=True, help="Summary table format."),
            click.option("--summary", type=click.Path(dir_okay=False), default=None,
                         help="Also write the summary (command, device, software, table, notes) as Markdown here."),
            click.option("--jobs", "-j", type=int, default=1, show_default=True,
                         help="Local executor: cells measured at once, each in its own process (timings interfere "
                              "on small machines; use 1 for speed)."),
            click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
                         help="slurm: one job per cell through submitit (pip install submitit), one GPU each."),
            click.option("--slurm-partition", default=None, help="Slurm partition for --executor slurm."),
            click.option("--slurm-time", type=int, default=60, show_default=True,
                         help="Slurm time limit per cell, minutes."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _measure(command: str, metrics: tuple[str, ...], models, res, batches, device, dtypes, thresholds, densities,
             image, window, patch, chunk_size, out, threads, cpu_max_res, use_compile, warmup, reps, max_time,
             timeout, isolate, fmt, summary=None, default_cpu_res: str = "1024", jobs: int = 1,
             executor: str = "local", slurm_partition=None, slurm_time: int = 60) -> list[dict]:
    """Build the cells of a measurement command and execute them (see :func:`_execute`)."""
    from qdm_bench.sweep import expand_models, make_cells

    kw = _cell_kwargs(device, threads, cpu_max_res, use_compile, warmup, reps, max_time)
    names = expand_models(models)
    resolutions = _res_list(res, "1024" if kw["device"] != "cpu" else default_cpu_res)
    _check_image(image)
    cells = make_cells(names, resolutions, batches=batches or (1,), dtypes=dtypes or ("fp32",),
                       thresholds=thresholds or (None,), densities=densities or (None,), metrics=metrics, image=image,
                       window=window, patch=patch, chunk_size=chunk_size, **kw)
    return _execute(command, cells, metrics, out, isolate, timeout, fmt, summary, jobs, executor,
                    _slurm_params(slurm_partition, slurm_time))


def _slurm_params(partition, minutes) -> dict:
    params = {"timeout_min": minutes}
    if partition:
        params["slurm_partition"] = partition
    return params


def _cell_kwargs(device, threads, cpu_max_res, use_compile, warmup, reps, max_time) -> dict:
    """Cell settings shared by every command: device, threads (1 on CPU by default), timing budget."""
    from qdm_bench.cells import resolve_device

    dev = resolve_device(device)
    if threads is not None and threads < 1:
        raise click.BadParameter("must be at least 1", param_hint="--threads")
    return dict(device=dev, threads=(threads or 1) if dev == "cpu" else threads, cpu_max_res=cpu_max_res,
                compile=use_compile, warmup=warmup, reps=reps, max_time_s=max_time)


def _check_image(image) -> None:
    from pathlib import Path

    if image is not None and ":" not in str(image) and not Path(image).is_file():
        raise click.BadParameter(f"{image} does not exist or is not a file", param_hint="--image")


def _execute(command: str, cells, metrics, out, isolate, timeout, fmt, summary, jobs=1, executor="local",
             slurm=None) -> list[dict]:
    """Run cells with a progress bar (resuming from ``out``), print the summary table and notes; returns the rows."""
    from pathlib import Path

    from qdm_bench.cells import needs_isolation, run_cells
    from qdm_bench.sweep import summary_table

    if not cells:
        raise click.ClickException("nothing to measure: the options select no cell")
    dev, threads, cpu_max_res = cells[0].device, cells[0].threads, cells[0].cpu_max_res
    names = list(dict.fromkeys(c.model for c in cells))
    resolutions = list(dict.fromkeys((c.height, c.width) for c in cells))
    out_path = Path(out or f"results/{command}.jsonl")
    iso = {"auto": "auto", "always": True, "never": False}[isolate]
    n_real = sum(needs_isolation(c) for c in cells)
    click.echo(f"{len(cells)} cell(s) on {dev}: {', '.join(names)} at "
               f"{', '.join(f'{h}x{w}' for h, w in resolutions)}; results -> {out_path}", err=True)
    interactive = sys.stderr.isatty()
    done_count = [0]

    def show(item):
        return item if isinstance(item, str) else None

    with click.progressbar(length=len(cells), label=command, item_show_func=show, file=sys.stderr,
                           show_pos=True) as bar:
        def on_start(cell):
            bar.update(0, f"{cell.label()}: measuring")

        def on_done(cell, row):
            done_count[0] += 1
            status = row.get("status", "?") + (" (cached)" if row.get("cached") else "")
            bar.update(1, f"{cell.label()}: {status}")
            if not interactive:
                msg = f" - {row['message']}" if row.get("status") in ("error", "oom") and row.get("message") else ""
                click.echo(f"  [{done_count[0]}/{len(cells)}] {cell.label()}: {status}{msg}", err=True)

        try:
            report = run_cells(cells, out_path, isolate=iso, timeout=timeout, on_start=on_start, on_done=on_done,
                               jobs=jobs, executor=executor, slurm=slurm, extra={"command": _command_line()})
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted: {done_count[0]} finished cell(s) are saved in {out_path}; re-run the same "
                       "command to resume", err=True)
            sys.exit(130)
    click.echo(summary_table(report.rows, tablefmt=fmt))
    notes = []
    if report.skipped:
        notes.append(f"{report.skipped} cell(s) were already finished in {out_path} and were not re-measured "
                     "(delete the file or use another --out to measure again).")
    if any(r.get("mem_estimated") for r in report.rows):
        notes.append("(est.) = estimated peak memory: a meta-device trace of live tensor bytes, fused "
                     "attention assumed; a lower bound (no allocator rounding, workspaces or CUDA context). "
                     f"Real runs happen on CUDA, or on CPU up to --cpu-max-res {cpu_max_res}.")
    if dev == "cpu" and "speed" in metrics and any(r.get("latency_median_ms") is None and r.get("status") == "ok"
                                                  for r in report.rows):
        notes.append(f"Speed is not measured on CPU above --cpu-max-res {cpu_max_res} (it could take hours); "
                     "measure a smaller --res, or raise --cpu-max-res to force it.")
    if "macs" in metrics:
        steps = sorted({r["num_steps"] for r in report.rows if r.get("num_steps")})
        notes.append("MACs: one network evaluation (multiply-accumulates of convolutions and matmuls, attention "
                     "included; FLOPs = 2 x MACs); GMACs/SR = the model's network evaluations per super-resolution "
                     f"({', '.join(map(str, steps)) or 15}).")
    for model_name, msg in dict.fromkeys((r["model"], r["message"]) for r in report.rows
                                         if r.get("status") == "ok" and r.get("message")):
        notes.append(f"{model_name}: {msg}")
    if n_real and dev == "cpu":
        notes.append(f"CPU timings use {threads} thread(s); peak memory = resident-set growth in a fresh process.")
    bad = [r for r in report.rows if r.get("status") in ("error", "oom")]
    if bad:
        notes.append(f"{len(bad)} cell(s) failed (status error/oom, message in {out_path}); error cells are retried "
                     "on the next run.")
    for n in notes:
        click.echo(n, err=True)
    if summary:
        _write_summary(Path(summary), command, dev, out_path, report.rows, notes)
        click.echo(f"summary written to {summary}", err=True)
    return report.rows


def _command_line() -> str:
    """The command as typed (for results rows and reports)."""
    import shlex

    ctx = click.get_current_context(silent=True)
    argv = ctx.find_root().meta.get("qdm_bench.argv") if ctx else None
    return "qdm-bench " + " ".join(shlex.quote(str(a)) for a in (sys.argv[1:] if argv is None else argv))


def _write_summary(path, command: str, device: str, out_path, rows, notes) -> None:
    """Markdown summary of a run: the exact command, device and software, the table and the notes."""
    from qdm_bench.measure import environment_info
    from qdm_bench.sweep import summary_table

    env = environment_info(device)
    names = sorted({str(r.get("device_name")) for r in rows if r.get("device_name")}) or [env["device_name"]]
    lines = [
        f"# qdm-bench {command}", "",
        f"Command: `{_command_line()}`", "",
        f"* device: {device} ({', '.join(names)})",
        f"* torch {env['torch_version']}, CUDA {env['cuda_version']}, qdm-bench {__version__}, "
        f"git {env['git_commit'] or 'unknown'}{' (dirty)' if env['git_dirty'] else ''}",
        f"* results file: `{out_path}`; written {env['timestamp']}", "",
        summary_table(rows, tablefmt="github"), "",
    ] + [f"* {n}" for n in notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


EPILOG_PARAMS = """\b
Examples:
  qdm-bench params
  qdm-bench params --models "qdm-*,unet" --format github
"""
EPILOG_MACS = """\b
Examples:
  qdm-bench macs --res 1024                       # the Figure-5 set, exact, in seconds on a CPU
  qdm-bench macs -m qdm-l --res 1024 --threshold 0.15
  qdm-bench macs -m dit-s/8 --res 256 --breakdown # per-module table (fvcore at small sizes, else meta count)
"""
EPILOG_MEMORY = """\b
Examples:
  qdm-bench memory --res 1024                     # CUDA: measured; CPU: estimated, within a minute
  qdm-bench memory -m "qdm-s,unet" --res 128 --device cpu
  qdm-bench memory -m qdm-l --res 1024 --density 0.25 --dtype bf16
"""
EPILOG_SPEED = """\b
Examples:
  qdm-bench speed -m "qdm-s,dit-s/8" --res 128 --device cpu --threads 1
  qdm-bench speed --res 1024 --dtype fp32 --dtype bf16   # on a GPU
"""
EPILOG_RUN = """\b
Examples:
  qdm-bench run --res 1024                        # everything, Figure-5 set (GPU: all measured)
  qdm-bench run --res 128 --models "qdm-s,dit-s/8,unet,swin-unet"
  qdm-bench run -m qdm-s --res 256 --threshold 0.06 --threshold 0.15 -o results/qdm.jsonl
Re-running the same command skips finished cells; Ctrl-C loses nothing already measured.
"""


@main.command(epilog=EPILOG_PARAMS)
@measurement_options()
def params(**kw) -> None:
    """Learnable and paper-convention parameter counts (counted on the meta device, no weights allocated)."""
    _measure("params", ("params",), **kw)


@main.command(epilog=EPILOG_MACS)
@measurement_options()
@click.option("--breakdown", is_flag=True, help="Also print a per-module MAC table for each model and resolution.")
@click.option("--breakdown-tool", type=click.Choice(["auto", "fvcore", "meta"]), default="auto", show_default=True,
              help="fvcore = fvcore's table on real CPU tensors with an attention handle (small sizes only); "
                   "meta = the exact meta-device count per module (any size); auto = fvcore up to 256x256.")
@click.option("--depth", type=int, default=2, show_default=True, help="Module depth of the breakdown.")
def macs(breakdown: bool, breakdown_tool: str, depth: int, **kw) -> None:
    """Exact MACs of one network evaluation and of a 15-step super-resolution, attention included.

    Counted on the meta device (no weights, no compute), so 1024x1024 takes seconds on a CPU. For QDM the window
    selection runs on the real mask first; the count then covers exactly the selected windows.
    """
    rows = _measure("macs", ("params", "macs"), **kw)
    if breakdown:
        _print_breakdowns(rows, breakdown_tool, depth, kw)


def _print_breakdowns(rows, tool: str, depth: int, kw) -> None:
    from tabulate import tabulate

    import torch

    from qdm_bench.cells import Cell, cell_mask
    from qdm_bench.macs import fvcore_breakdown, mac_breakdown
    from qdm_bench.registry import create_model

    for r in rows:
        if r.get("status") != "ok":
            continue
        cell = Cell(model=r["model"], height=r["height"], width=r["width"], batch=r["batch"],
                    threshold=r.get("threshold"), density=r.get("density"), window=kw.get("window"),
                    patch=kw.get("patch"), chunk_size=kw.get("chunk_size"), image=kw.get("image"))
        with torch.device("meta"):
            meta_model = create_model(cell.model, **cell.overrides())
        mask = cell_mask(cell, meta_model) if hasattr(meta_model, "plan") else None
        use_fvcore = tool == "fvcore" or (tool == "auto" and max(cell.height, cell.width) <= 256)
        click.echo(f"\n{cell.label()}: per-module breakdown "
                   + ("(fvcore, real CPU tensors, SDPA handle; fvcore also prices norms)" if use_fvcore
                      else "(exact meta-device count)"))
        if use_fvcore:
            table, _ = fvcore_breakdown(cell.model, (cell.height, cell.width), cell.batch, mask=mask,
                                        max_depth=depth + 1, **cell.overrides())
            click.echo(table)
        else:
            br = mac_breakdown(cell.model, (cell.height, cell.width), cell.batch, mask=mask, depth=depth,
                               **cell.overrides())
            def order(b):  # natural order of dotted paths: blocks.2 before blocks.10
                return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in b["module"].split(".")]

            click.echo(tabulate([[b["module"], f"{b['macs'] / 1e9:,.3f}", f"{100 * b['share']:.1f}"]
                                 for b in sorted(br, key=order)],
                                headers=["module", "GMACs", "% of total"], tablefmt="simple", disable_numparse=True))


@main.command(epilog=EPILOG_MEMORY)
@measurement_options()
def memory(**kw) -> None:
    """Peak memory of one forward above the resident weights and inputs, with exact MACs.

    CUDA: max allocated / reserved after reset_peak_memory_stats (steady state after a warm-up call). CPU: resident
    set growth in a fresh process, up to --cpu-max-res; above it an estimate from a meta-device trace, labelled
    (est.) and never mixed with measured values.
    """
    _measure("memory", ("params", "macs", "memory"), **kw)


@main.command(epilog=EPILOG_SPEED)
@measurement_options(default_res=None)
def speed(**kw) -> None:
    """Latency of one forward: warm-up, then timed repetitions (CUDA events, or a wall clock at fixed CPU threads).

    Reports median, p10/p90 and throughput (images/s; QDM also windows/s). Each cell runs in a fresh subprocess.
    """
    _measure("speed", ("params", "macs", "speed"), default_cpu_res="128", **kw)


@main.command(epilog=EPILOG_RUN)
@measurement_options()
def run(**kw) -> None:
    """All measurements (parameters, MACs, peak memory, speed) for every cell, one fresh subprocess per cell."""
    _measure("run", ("params", "macs", "memory", "speed"), **kw)


# -- ablations ---------------------------------------------------------------------------------------------------

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


@main.group(cls=FriendlyGroup)
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
@click.option("--model", "-m", default="qdm-l", show_default=True, help="QDM size (Tables 3 and 6 use QDM-L).")
@click.option("--images", "-i", default="builtin", show_default=True,
              help="A built-in image set (builtin, natural, medical, ct, phantoms) or a folder / file of "
                   "PNG/JPEG/TIFF/DICOM images.")
@click.option("--limit", type=int, default=None, help="Use at most this many images.")
@click.option("--image-size", type=int, default=512, show_default=True,
              help="HR side: images are center-cropped to a square and resized to it before degradation.")
@click.option("--scale", type=int, default=4, show_default=True, help="LR degradation: bicubic down-scaling factor.")
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
@execution_options
def ablate_threshold(model, images, limit, image_size, scale, res, thresholds, ckpt, speed, memory, tile, posterior,
                     **ex) -> None:
    """Threshold sweep: per image, the full-mask row first, then each threshold: density, active windows, MACs."""
    from qdm_bench.ablate import threshold_cells
    from qdm_bench.images import image_keys
    from qdm_bench.sweep import parse_resolution

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
        from qdm_bench.quality import checkpoint_tile

        kw["tile"] = checkpoint_tile(ckpt, _tile(tile))
        posterior = posterior or "paper"
    cells = threshold_cells(model, keys, size, _float_list(thresholds, "--thresholds"), metrics,
                            image_size=image_size, scale=scale, ckpt=ckpt, posterior=posterior, **kw)
    _run_ablation("ablate-threshold", cells, metrics, ex)


def _ablation_cell_kwargs(ex: dict) -> dict:
    """Cell settings from the execution options of an ablation command (the cell-only ones are taken out of ``ex``)."""
    return _cell_kwargs(ex.pop("device"), ex["threads"], ex["cpu_max_res"], ex.pop("use_compile"), ex.pop("warmup"),
                        ex.pop("reps"), ex.pop("max_time"))


def _run_ablation(command: str, cells, metrics, ex: dict) -> None:
    _execute(command, cells, metrics, ex["out"], ex["isolate"], ex["timeout"], ex["fmt"], ex["summary"], ex["jobs"],
             ex["executor"], _slurm_params(ex["slurm_partition"], ex["slurm_time"]))


def _simple_ablation(kind: str):
    """Build the window or patch ablation command (Table 4)."""
    default = {"window": "4,8,16", "patch": "4,8"}[kind]
    plural = {"window": "windows", "patch": "patches"}[kind]
    epilog = f"""\b
Examples:
  qdm-bench ablate {kind} -m qdm-b --res 128
  qdm-bench ablate {kind} -m qdm-s --res 256 --{plural} {default} --speed --device cpu
"""

    @click.option("--model", "-m", default="qdm-b", show_default=True, help="QDM size (Table 4 uses QDM-B).")
    @click.option("--res", "res", default="128", show_default=True, help="Model input resolution, N or HxW.")
    @click.option(f"--{plural}", "values", default=default, show_default=True, help=f"Comma-separated {kind} sizes.")
    @click.option("--threshold", "-s", type=float, default=None,
                  help="Quadtree threshold on the built-in synthetic LR image (default: full mask, dense).")
    @click.option("--speed", is_flag=True, help="Also measure latency (slow on CPU).")
    @click.option("--memory", is_flag=True, help="Also measure (or estimate) peak memory.")
    @execution_options
    def command(model, res, values, threshold, speed, memory, **ex) -> None:
        from qdm_bench import ablate as ab
        from qdm_bench.sweep import parse_resolution

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
    from qdm_bench.sweep import expand_models, parse_resolution

    metrics = _ablation_metrics(speed, not no_memory)
    kw = _ablation_cell_kwargs(ex)
    resolutions = [parse_resolution(r) for r in res.split(",") if r.strip()]
    cells = res_cells(expand_models(models), resolutions, metrics, **kw)
    _run_ablation("ablate-res", cells, metrics, ex)


# -- reports -----------------------------------------------------------------------------------------------------

EPILOG_REPORT = """\b
Examples:
  qdm-bench report results/run.jsonl -o reports/my-run
  qdm-bench report results/memory.jsonl results/ablate-threshold.jsonl -o reports/cpu --title "CPU reference"
"""


@main.command(epilog=EPILOG_REPORT)
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Report folder (created): tables (.md, .tex), plots (.png, .pdf) and index.md.")
@click.option("--title", default=None, help="Report title.")
@click.option("--command", "commands", multiple=True,
              help="Command(s) that produced the results, for index.md (default: those recorded in the rows).")
def report(results, out_dir, title, commands) -> None:
    """Render tables and figures from results files alone (no re-measurement).

    Paper-style tables (Figure-5 costs, Table 5 configurations, Tables 3/6 threshold sweeps, Table 4 window/patch)
    in Markdown and LaTeX, Figure-5-style and cost-vs-resolution plots, threshold curves, and an index.md stating
    devices, software versions and the commands that produced the results.
    """
    from qdm_bench.report import load_rows, write_report

    if not commands:
        df = load_rows(list(results))
        if "command" in df.columns:
            commands = tuple(dict.fromkeys(c for c in df["command"].dropna().astype(str) if c))
    index = write_report(list(results), out_dir, title=title, commands=list(commands) or None)
    click.echo(f"report written: {index}")


# -- regression tracking -------------------------------------------------------------------------------------------

EPILOG_COMPARE = """\b
Examples:
  qdm-bench compare reports/baseline/run.jsonl results/run.jsonl
  qdm-bench compare old.jsonl new.jsonl --time-tol 1.5 --all
Exit status: 0 when nothing regressed, 1 on a regression or a missing cell.
"""


@main.command(epilog=EPILOG_COMPARE)
@click.argument("baseline", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--time-tol", type=float, default=2.0, show_default=True,
              help="Absolute median latency may grow up to this factor (same device and threads only).")
@click.option("--ratio-tol", type=float, default=0.25, show_default=True,
              help="In-run QDM sparse/dense latency ratio may grow by this fraction.")
@click.option("--memory-tol", type=float, default=1.5, show_default=True,
              help="Measured peak memory may grow up to this factor.")
@click.option("--psnr-tol", type=float, default=0.1, show_default=True, help="Allowed PSNR drop, dB.")
@click.option("--allow-missing", is_flag=True, help="Cells of the baseline absent from NEW are not a failure.")
@click.option("--all", "show_all", is_flag=True, help="Show every comparison, not only what changed.")
@click.option("--format", "fmt", type=click.Choice(["simple", "github"]), default="simple", show_default=True)
def compare(baseline, new, time_tol, ratio_tol, memory_tol, psnr_tol, allow_missing, show_all, fmt) -> None:
    """Compare two results files cell by cell; exit non-zero on a regression.

    Parameters and MACs must match exactly; measured memory and absolute latency within generous factors on the
    same device; the QDM sparse/dense latency ratio of each run within --ratio-tol; quality within tolerances.
    """
    from tabulate import tabulate

    from qdm_bench.compare import Tolerances, compare_files

    for name, value in (("--time-tol", time_tol), ("--memory-tol", memory_tol)):
        if value < 1:
            raise click.BadParameter("must be at least 1 (a factor)", param_hint=name)
    tol = Tolerances(time_ratio=time_tol, speed_ratio=ratio_tol, memory_ratio=memory_tol, psnr_db=psnr_tol)
    findings = compare_files(baseline, new, tol, allow_missing)
    shown = [f for f in findings if show_all or f.verdict != "ok"]
    if shown:
        click.echo(tabulate([[f.cell, f.metric, f.baseline, f.new, f.verdict, f.note] for f in shown],
                            headers=["cell", "metric", "baseline", "new", "verdict", "note"], tablefmt=fmt,
                            disable_numparse=True))
    failed = [f for f in findings if f.failed]
    counts = {v: sum(f.verdict == v for f in findings) for v in ("ok", "improved", "skipped", "added")}
    summary = (f"{len(findings)} comparisons: {counts['ok']} ok, {len(failed)} regressed or missing, "
               f"{counts['improved']} improved, {counts['skipped']} skipped, {counts['added']} new cells")
    if failed:
        click.echo(summary, err=True)
        raise click.ClickException(f"{len(failed)} regression(s) against {baseline}, e.g. {failed[0].cell}: "
                                   f"{failed[0].metric} {failed[0].baseline} -> {failed[0].new}")
    click.echo(summary)


# -- quality -------------------------------------------------------------------------------------------------------

EPILOG_QUALITY = """\b
Examples:
  qdm-bench quality --ckpt runs/qdm-t/last.pt                       # the checkpoint's held-out images, full mask
  qdm-bench quality --ckpt runs/qdm-t/last.pt --thresholds full,0.15 # QDM full mask vs threshold 0.15
  qdm-bench quality --ckpt runs/qdm-t/last.pt --thresholds full,0.15 --posteriors paper,reference --ensemble 1,8
  qdm-bench quality -m qdm-t --ckpt runs/qdm-t/last.pt --data phantoms --limit 3
Scores: PSNR/SSIM on BT.601 Y and RGB PSNR (border crop = scale), LPIPS/CLIPIQA/MUSIQ when pyiqa and their weights
are available (else "not available: place FILE in DIR"). Bicubic upsampling is always scored as the floor.
"""


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


@main.command(epilog=EPILOG_QUALITY)
@click.option("--model", "-m", default=None, help="Model of the checkpoint (default: the one it records).")
@click.option("--ckpt", required=True, type=click.Path(dir_okay=False), help="Checkpoint from `qdm-bench train`.")
@click.option("--data", "-d", default="heldout", show_default=True,
              help="'heldout' (the images the checkpoint's training held out), an image set (ct, phantoms, "
                   "natural, medical, builtin) or a folder of images.")
@click.option("--limit", type=int, default=None, help="Use at most this many images.")
@click.option("--image-size", type=int, default=None, help="HR side (default: the checkpoint's training image size).")
@click.option("--scale", type=int, default=None, help="SR factor (default: the checkpoint's).")
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
@execution_options
def quality(model, ckpt, data, limit, image_size, scale, thresholds, seed, samplers, posteriors, ensemble, tile,
            **ex) -> None:
    """Super-resolve images with a trained checkpoint (the full sampler) and score SR and bicubic against HR."""
    from qdm_bench.quality import quality_cells

    if limit is not None and limit < 1:
        raise click.BadParameter("must be at least 1", param_hint="--limit")
    values = [None if v.strip().lower() in ("full", "none") else v for v in thresholds.split(",") if v.strip()]
    try:
        thr = [None if v is None else float(v) for v in values]
    except ValueError:
        raise click.BadParameter(f"give numbers or 'full', got {thresholds!r}", param_hint="--thresholds") from None
    kw = _ablation_cell_kwargs(ex)
    cells = quality_cells(ckpt, model=model, data=data, limit=limit, image_size=image_size, scale=scale,
                          thresholds=thr or [None], seed=seed, tile=_tile(tile),
                          samplers=_choices(samplers, SAMPLERS, "--samplers"),
                          posteriors=_choices(posteriors, POSTERIOR_MODES, "--posteriors"),
                          ensembles=_int_list(ensemble, "--ensemble"), **kw)
    _run_ablation("quality", cells, ("params", "macs", "quality"), ex)


# -- training ------------------------------------------------------------------------------------------------------

EPILOG_TRAIN = """\b
Examples:
  qdm-bench train                                   # qdm-t on CT slices and phantoms, 64x64 crops, 2000 steps
  qdm-bench train -m qdm-t --steps 300 --out runs/qdm-t-quick
  qdm-bench train -m unet --images ./my_images --crop 128 --batch 4
Re-running the same command resumes from OUT/last.pt.
"""


@main.command(epilog=EPILOG_TRAIN)
@click.option("--model", "-m", default="qdm-t", show_default=True, help="Registered model to train.")
@click.option("--images", "-i", default="ct", show_default=True,
              help="Image set (builtin, natural, medical, ct, phantoms) or a folder of images.")
@click.option("--image-size", type=int, default=256, show_default=True, help="Images are resized to this side.")
@click.option("--holdout", type=int, default=2, show_default=True,
              help="The last N images are held out of training (quality is measured on them).")
@click.option("--crop", type=int, default=64, show_default=True, help="Training crop side (HR pixels).")
@click.option("--scale", type=int, default=4, show_default=True, help="LR degradation factor (bicubic).")
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--steps", type=int, default=2000, show_default=True)
@click.option("--lr", type=float, default=2e-4, show_default=True, help="AdamW learning rate.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--ckpt-every", type=int, default=250, show_default=True, help="Checkpoint period (steps).")
@click.option("--threads", type=int, default=None, help="CPU threads (default: torch's).")
@click.option("--out", "-o", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run folder for checkpoints (default runs/<model>).")
@click.option("--prediction", type=click.Choice(["x0", "residual", "preconditioned"]), default="x0",
              show_default=True,
              help="ResShift family: predict x0 (as QDM), the residual x0 - y0 (starts at bicubic quality), or the "
                   "residual with an EDM-style skip from x_t (see qdm_bench/train.py).")
@click.option("--kappa", type=float, default=None,
              help="ResShift family: noise scale κ (default 2.0 as QDM; smaller is easier to learn quickly).")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="Learning-rate schedule (cosine: decays to 0 at --steps).")
@click.option("--no-resume", is_flag=True, help="Start from scratch even if OUT/last.pt exists (it is overwritten).")
def train(model, images, image_size, holdout, crop, scale, batch, steps, lr, seed, ckpt_every, threads, out_dir,
          prediction, kappa, lr_schedule, no_resume) -> None:
    """Train a model with its diffusion objective (QDM: Eq. 6) on random crops of an image set; resumable."""
    from qdm_bench.train import TrainConfig
    from qdm_bench.train import train as run_training

    cfg = TrainConfig(model=model, images=images, image_size=image_size, holdout=holdout, crop=crop, scale=scale,
                      batch=batch, steps=steps, lr=lr, seed=seed, ckpt_every=ckpt_every, threads=threads,
                      prediction=prediction, kappa=kappa, lr_schedule=lr_schedule)
    if kappa is not None and not kappa > 0:
        raise click.BadParameter(f"must be > 0, got {kappa}", param_hint="--kappa")
    out = out_dir or f"runs/{model.replace('/', '_').replace(':', '_')}"
    with click.progressbar(length=steps, label=f"train {model}", file=sys.stderr, show_pos=True,
                           item_show_func=lambda s: s) as bar:
        state = {"avg": None}

        def progress(step: int, loss: float) -> None:
            state["avg"] = loss if state["avg"] is None else 0.98 * state["avg"] + 0.02 * loss
            bar.update(step - bar.pos, f"loss {state['avg']:.4f}")

        last = run_training(cfg, out, resume=not no_resume, progress=progress)
    from qdm_bench.train import read_checkpoint

    ckpt = read_checkpoint(last)
    seconds = ckpt.get("train_seconds")  # absent in checkpoints written before it was recorded
    timing = "" if seconds is None else f" in {seconds:.0f} s of wall time, {ckpt.get('train_threads')} threads"
    click.echo(f"checkpoint: {last} ({ckpt['step']} steps trained{timing})")


from qdm_bench.cli_pgs import pgs_cmd  # noqa: E402 - registered after the group is defined

main.add_command(pgs_cmd)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
