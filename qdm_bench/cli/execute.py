"""Running the cells of a command: cell settings, the progress display, the summary table and notes."""
from __future__ import annotations

import os
import signal
import sys

import click

from qdm_bench import __version__
from qdm_bench.cli.options import _res_list
from qdm_bench.signals import on_stop_signals


def _measure(command: str, metrics: tuple[str, ...], models, res, batches, device, dtypes, thresholds, densities,
             image, window, patch, chunk_size, out, threads, cpu_max_res, use_compile, warmup, reps, max_time,
             timeout, isolate, fmt, summary=None, default_cpu_res: str = "1024", jobs: int = 1,
             executor: str = "local", slurm_partition=None, slurm_time: int = 60) -> list[dict]:
    """Build the cells of a measurement command and execute them (see :func:`_execute`)."""
    from qdm_bench.measure.sweep import expand_models, make_cells

    kw = _cell_kwargs(device, threads, cpu_max_res, use_compile, warmup, reps, max_time, executor)
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


def _cell_kwargs(device, threads, cpu_max_res, use_compile, warmup, reps, max_time, executor="local") -> dict:
    """Cell settings shared by every command: device, threads (1 on CPU by default), timing budget.

    With ``--executor slurm`` a CUDA device (``auto`` or ``cuda``) is not resolved here — the submitting login node
    usually has no GPU — but in each job, on the compute node (:func:`qdm_bench.measure.runner.measure_cell_dict`).
    """
    from qdm_bench.measure.validate import resolve_device

    dev = "cuda" if executor == "slurm" and device in ("auto", "cuda") else resolve_device(device)
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

    from qdm_bench.cli.progress import SweepProgress
    from qdm_bench.measure.runner import run_cells
    from qdm_bench.measure.validate import validate_cells
    from qdm_bench.report.summary import summary_table

    if not cells:
        raise click.ClickException("nothing to measure: the options select no cell")
    validate_cells(cells)  # every option is checked before anything runs or prints
    dev, threads, cpu_max_res = cells[0].run.device, cells[0].run.threads, cells[0].run.cpu_max_res
    names = list(dict.fromkeys(c.model.name for c in cells))
    resolutions = list(dict.fromkeys((c.input.height, c.input.width) for c in cells))
    out_path = Path(out or f"results/{command}.jsonl")
    check_writable(out_path)
    iso = {"auto": "auto", "always": True, "never": False}[isolate]
    n_real = sum(c.needs_isolation for c in cells)
    click.echo(f"{len(cells)} cell(s) on {dev}: {', '.join(names)} at "
               f"{', '.join(f'{h}x{w}' for h, w in resolutions)}; results -> {out_path}", err=True)
    with SweepProgress(command, len(cells)) as progress, on_stop_signals(interrupt=True) as stopped:
        try:
            report = run_cells(cells, out_path, isolate=iso, timeout=timeout, on_start=progress.start,
                               on_done=progress.done, on_phase=progress.phase, jobs=jobs, executor=executor,
                               slurm=slurm, extra={"command": _command_line()}, validated=True)
        except KeyboardInterrupt:
            from qdm_bench.measure.runner import stop_workers

            stop_workers()
            name = "SIGTERM" if stopped["signum"] == signal.SIGTERM else "SIGINT"
            click.echo(f"\ninterrupted by {name}: {progress.count} cell(s) finished, their rows are in {out_path}; "
                       "re-run the same command to resume", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            # every row is on disk (appends are fsynced) and the workers are gone: leave now, without waiting for
            # pool threads still reaping their workers or for interpreter shutdown
            os._exit(128 + (stopped["signum"] or signal.SIGINT))
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
    missing = [r["message"] for r in bad if "pip install 'qdm-bench[" in (r.get("message") or "")]
    if missing:  # a missing optional package is the user's to fix: exit non-zero with its one-line fix
        from qdm_bench.errors import ConfigError

        raise ConfigError(missing[0].split(": ", 1)[-1] if missing[0].startswith(("ImportError", "ModuleNotFound",
                                                                                  "ConfigError")) else missing[0])
    return report.rows


def _command_line() -> str:
    """The command as typed (for results rows and reports)."""
    import shlex

    ctx = click.get_current_context(silent=True)
    argv = ctx.find_root().meta.get("qdm_bench.argv") if ctx else None
    return "qdm-bench " + " ".join(shlex.quote(str(a)) for a in (sys.argv[1:] if argv is None else argv))


def _write_summary(path, command: str, device: str, out_path, rows, notes) -> None:
    """Markdown summary of a run: the exact command, device and software, the table and the notes."""
    from qdm_bench.measure.environment import environment_info
    from qdm_bench.report.summary import summary_table

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


def _ablation_cell_kwargs(ex: dict) -> dict:
    """Cell settings from the execution options of an ablation command (the cell-only ones are taken out of ``ex``)."""
    return _cell_kwargs(ex.pop("device"), ex["threads"], ex["cpu_max_res"], ex.pop("use_compile"), ex.pop("warmup"),
                        ex.pop("reps"), ex.pop("max_time"), ex.get("executor", "local"))


def _run_ablation(command: str, cells, metrics, ex: dict) -> None:
    _execute(command, cells, metrics, ex["out"], ex["isolate"], ex["timeout"], ex["fmt"], ex["summary"], ex["jobs"],
             ex["executor"], _slurm_params(ex["slurm_partition"], ex["slurm_time"]))



def check_writable(path) -> None:
    """Refuse, before anything is measured, a results file that cannot be created or appended to.

    The file is created (empty) when it does not exist; it is never removed again, since another sweep may be
    appending to it by then."""
    from pathlib import Path

    from qdm_bench.errors import ConfigError

    path = Path(path)
    try:  # open it for appending, as a measurement will (an empty new file is left: it holds no rows)
        if path.is_dir():
            raise IsADirectoryError(21, "it is a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write the results file {path} ({e.strerror or type(e).__name__}); give a "
                          "writable -o/--out") from None
