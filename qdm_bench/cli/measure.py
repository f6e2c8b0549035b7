"""The measurement commands: params, macs, memory, speed, run."""
from __future__ import annotations


import click

from qdm_bench.cli.execute import _measure
from qdm_bench.cli.options import measurement_options

EPILOG_PARAMS = """\b
Examples:
  qdm-bench params
  qdm-bench params --models "qdm-*,unet" --format github
"""
EPILOG_MACS = """\b
Examples:
  qdm-bench macs --res 1024                       # the Figure-5 set, exact, on the meta device
  qdm-bench macs -m qdm-l --res 1024 --threshold 0.15
  qdm-bench macs -m dit-s/8 --res 256 --breakdown # per-module table (fvcore at small sizes, else meta count)
"""
EPILOG_MEMORY = """\b
Examples:
  qdm-bench memory --res 1024                     # CUDA: measured; CPU: estimated on the meta device
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


@click.command(epilog=EPILOG_PARAMS)
@measurement_options()
def params(**kw) -> None:
    """Learnable and paper-convention parameter counts (counted on the meta device, no weights allocated)."""
    _measure("params", ("params",), **kw)


@click.command(epilog=EPILOG_MACS)
@measurement_options()
@click.option("--breakdown", is_flag=True, help="Also print a per-module MAC table for each model and resolution.")
@click.option("--breakdown-tool", type=click.Choice(["auto", "fvcore", "meta"]), default="auto", show_default=True,
              help="fvcore = fvcore's table on real CPU tensors with an attention handle (small sizes only); "
                   "meta = the exact meta-device count per module (any size); auto = fvcore up to 256x256 "
                   "(meta where fvcore is not installed).")
@click.option("--depth", type=int, default=2, show_default=True, help="Module depth of the breakdown.")
def macs(breakdown: bool, breakdown_tool: str, depth: int, **kw) -> None:
    """Exact MACs of one network evaluation and of a 15-step super-resolution, attention included.

    Counted on the meta device (no weights, no compute), so 1024x1024 needs no GPU. For QDM the window
    selection runs on the real mask first; the count then covers exactly the selected windows.
    """
    rows = _measure("macs", ("params", "macs"), **kw)
    if breakdown:
        _print_breakdowns(rows, breakdown_tool, depth, kw)


def _print_breakdowns(rows, tool: str, depth: int, kw) -> None:
    from tabulate import tabulate

    import torch

    from qdm_bench.measure.cell import Cell
    from qdm_bench.measure.inputs import cell_mask
    from qdm_bench.measure.macs import fvcore_breakdown, mac_breakdown
    from qdm_bench.registry import create_model, resolve

    for r in rows:
        if r.get("status") != "ok":
            continue
        cell = Cell.create(r["model"], r["height"], r["width"], batch=r["batch"], threshold=r.get("threshold"),
                           density=r.get("density"), window=kw.get("window"), patch=kw.get("patch"),
                           chunk_size=kw.get("chunk_size"), image=kw.get("image"))
        overrides = resolve(cell.model.name).option_kwargs(dict(cell.model.options))
        with torch.device("meta"):
            meta_model = create_model(cell.model.name, **overrides)
        mask = cell_mask(cell, meta_model) if hasattr(meta_model, "plan") else None
        h, w, b = cell.input.height, cell.input.width, cell.input.batch
        use_fvcore = tool == "fvcore" or (tool == "auto" and max(h, w) <= 256 and _have_fvcore())
        click.echo(f"\n{cell.label()}: per-module breakdown "
                   + ("(fvcore, real CPU tensors, SDPA handle; fvcore also prices norms)" if use_fvcore
                      else "(exact meta-device count)"))
        if use_fvcore:
            table, _ = fvcore_breakdown(cell.model.name, (h, w), b, mask=mask, max_depth=depth + 1, **overrides)
            click.echo(table)
        else:
            br = mac_breakdown(cell.model.name, (h, w), b, mask=mask, depth=depth, **overrides)

            def order(b):  # natural order of dotted paths: blocks.2 before blocks.10
                return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in b["module"].split(".")]

            click.echo(tabulate([[b["module"], f"{b['macs'] / 1e9:,.3f}", f"{100 * b['share']:.1f}"]
                                 for b in sorted(br, key=order)],
                                headers=["module", "GMACs", "% of total"], tablefmt="simple", disable_numparse=True))


@click.command(epilog=EPILOG_MEMORY)
@measurement_options()
def memory(**kw) -> None:
    """Peak memory of one forward above the resident weights and inputs, with exact MACs.

    CUDA: max allocated / reserved after reset_peak_memory_stats (steady state after a warm-up call). CPU: resident
    set growth in a fresh process, up to --cpu-max-res; above it an estimate from a meta-device trace, labelled
    (est.) and never mixed with measured values.
    """
    _measure("memory", ("params", "macs", "memory"), **kw)


@click.command(epilog=EPILOG_SPEED)
@measurement_options(default_res=None)
def speed(**kw) -> None:
    """Latency of one forward: warm-up, then timed repetitions (CUDA events, or a wall clock at fixed CPU threads).

    Reports median, p10/p90 and throughput (images/s; QDM also windows/s). Each cell runs in a fresh subprocess.
    """
    _measure("speed", ("params", "macs", "speed"), default_cpu_res="128", **kw)


@click.command(epilog=EPILOG_RUN)
@measurement_options()
def run(**kw) -> None:
    """All measurements (parameters, MACs, peak memory, speed) for every cell, one fresh subprocess per cell."""
    _measure("run", ("params", "macs", "memory", "speed"), **kw)


def _have_fvcore() -> bool:
    """Whether the optional fvcore cross-check can be imported (extra ``qdm-bench[fvcore]``)."""
    try:
        import fvcore  # noqa: F401
    except ImportError:
        return False
    return True
