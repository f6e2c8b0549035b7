"""Running many cells: each in a fresh subprocess where it allocates real tensors, resumable, failures as rows.

:func:`run_cells` validates every cell first (nothing runs if one is invalid), skips cells already finished in
the results file, appends each row as soon as it exists, and turns crashes, timeouts and out-of-memory into rows
(``status`` ``error`` / ``oom``) so the sweep goes on.  Executors: one cell after another, ``jobs`` local
processes at once, or one Slurm job per cell through submitit.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from qdm_bench.errors import ConfigError
from qdm_bench.measure.cell import Cell
from qdm_bench.measure.claims import CLAIMED, Claims
from qdm_bench.measure.core import error_row, measure_in_process
from qdm_bench.measure.results import FINISHED, append_result, read_results
from qdm_bench.measure.validate import validate_cells

__all__ = ["RunReport", "run_cells", "run_in_subprocess", "measure_cell_dict", "PHASE_MARK", "stop_workers"]


@dataclass
class RunReport:
    """What happened in a run: rows measured now, how many cells were found finished, and every cell's row in order."""

    measured: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


PHASE_MARK = "qdm-bench-phase: "  # a worker's stderr line announcing the phase it enters
_WORKERS: set[subprocess.Popen] = set()
_WORKERS_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set by stop_workers: no new worker starts after it


def stop_workers(grace: float = 2.0) -> int:
    """Terminate every worker process this process started (SIGTERM, then SIGKILL after ``grace`` seconds); no
    worker starts after this."""
    with _WORKERS_LOCK:
        _STOPPING.set()
        procs = [p for p in _WORKERS if p.poll() is None]
    for p in procs:
        p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return len(procs)


def run_in_subprocess(cell: Cell, timeout: float | None = None, on_phase: Callable[[str], None] | None = None,
                      results: str | Path | None = None,
                      extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
    """Measure a cell in a fresh Python process: (row, whether the worker appended it to ``results`` itself).

    The worker appends its finished row (with ``extra``) to ``results`` itself, so a row it finishes is kept even
    if this process dies; it exits when this process does (a watchdog).  Failures, timeouts and kills become
    error rows (returned, not appended).  The worker announces its phases on stderr (``PHASE_MARK``); they reach
    ``on_phase`` as they happen, and the last other lines are kept for the error row of a worker that dies.
    """
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qdm-bench-") as tmp:
        out = Path(tmp) / "row.json"
        env = dict(os.environ, QDM_BENCH_PHASES="1", QDM_BENCH_PARENT=str(os.getpid()))
        if results is not None:
            env.update(QDM_BENCH_RESULTS=str(results), QDM_BENCH_EXTRA=json.dumps(extra or {}))
        if cell.run.threads is not None and cell.run.device == "cpu":
            env.update(OMP_NUM_THREADS=str(cell.run.threads), MKL_NUM_THREADS=str(cell.run.threads))
        with _WORKERS_LOCK:  # started and registered under the lock, so stop_workers sees every worker
            if _STOPPING.is_set():
                raise KeyboardInterrupt("the sweep is stopping")
            proc = subprocess.Popen([sys.executable, "-m", "qdm_bench.measure.worker", str(out)],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    env=env)
            _WORKERS.add(proc)
        tail: collections.deque[str] = collections.deque(maxlen=20)

        def read() -> None:
            for line in proc.stderr:
                if line.startswith(PHASE_MARK):
                    if on_phase:
                        on_phase(line[len(PHASE_MARK):].strip())
                elif line.strip():
                    tail.append(line.rstrip())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            proc.stdin.write(json.dumps(cell.flat()))
            proc.stdin.close()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return error_row(cell, "error", f"timed out after {timeout:.0f} s", time.perf_counter() - t0), False
        except BaseException:  # an interrupt of this process: the worker goes with it
            proc.terminate()
            raise
        finally:
            reader.join(timeout=5)
            with _WORKERS_LOCK:
                _WORKERS.discard(proc)
        if out.exists():
            row = json.loads(out.read_text())
            return row, results is not None and row.get("status") != "error"  # the worker appends finished rows
        why = tail[-1] if tail else "no output"
        if proc.returncode < 0:
            sig = -proc.returncode
            why = f"killed by signal {sig}" + (" (likely the out-of-memory killer)" if sig == 9 else "")
        return error_row(cell, "error", f"worker exited with code {proc.returncode}: {why}",
                         time.perf_counter() - t0, "\n".join(tail) or None), False


def run_cells(cells: Iterable[Cell], out: str | Path, isolate: bool | str = "auto", timeout: float | None = None,
              on_start: Callable[[Cell], None] | None = None,
              on_done: Callable[[Cell, dict[str, Any]], None] | None = None, jobs: int = 1,
              executor: str = "local", slurm: dict[str, Any] | None = None,
              extra: dict[str, Any] | None = None, validated: bool = False,
              on_phase: Callable[[Cell, str], None] | None = None) -> RunReport:
    """Measure cells not yet finished in ``out``, appending each row as soon as it exists.

    ``isolate``: ``"auto"`` (default) runs every cell that allocates real tensors in a fresh subprocess and
    meta-only cells (parameters, MACs, estimated memory) here; ``True`` isolates every cell; ``False`` none.
    ``jobs`` > 1 runs that many isolated cells at once (local executor; every cell then gets its own process).
    ``extra`` values (e.g. the command line) are stored in every new row.  ``on_phase(cell, phase)`` hears each
    phase a cell enters (build, count, memory, warm-up, timing with reps done, sampling).  Every cell is validated first
    (:func:`qdm_bench.measure.validate.validate_cells`) unless the caller did (``validated``).
    ``executor="slurm"`` submits each cell as a Slurm job through submitit (``slurm``: submitit parameters such as
    ``slurm_partition``, ``timeout_min``, ``gpus_per_node``; ``folder`` for logs); rows are gathered into ``out``.
    A cell already finished in ``out`` is not measured again: its stored row is reported with ``cached=True``;
    a cell another sweep of the same file is measuring is waited for (:mod:`qdm_bench.measure.claims`).
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    if executor not in ("local", "slurm"):
        raise ConfigError(f"unknown executor {executor!r}; use local or slurm")
    cells = list(cells)
    if not validated:  # the CLI validates before it prints anything
        validate_cells(cells)
    previous = {r.get("key"): r for r in (read_results(out) if Path(out).exists() else [])
                if r.get("status") in FINISHED}
    report = RunReport()
    rows: dict[str, dict[str, Any]] = {}
    pending: list[Cell] = []
    for cell in cells:
        if cell.key in previous:
            report.skipped += 1
            rows[cell.key] = dict(previous[cell.key], cached=True)
            if on_done:
                on_done(cell, rows[cell.key])
        elif cell.key not in {c.key for c in pending}:
            pending.append(cell)

    def phase_of(cell: Cell) -> Callable[[str], None] | None:
        return None if on_phase is None else (lambda phase: on_phase(cell, phase))

    claims = Claims(out)

    def finish(cell: Cell, row: dict[str, Any], appended: bool = False) -> None:
        row.update(extra or {})
        if not appended:
            kept = claims.finished(cell.key) if row.get("status") == "error" else None
            if kept is not None:  # a worker stopped after appending its row: keep that row, not the error
                row = kept
            else:
                append_result(out, row)
        claims.release(cell.key)
        rows[cell.key] = row
        report.measured.append(row)
        if on_done:
            on_done(cell, row)

    def found(cell: Cell, row: dict[str, Any]) -> None:  # measured meanwhile by another sweep on this file
        report.skipped += 1
        rows[cell.key] = dict(row, cached=True)
        if on_done:
            on_done(cell, rows[cell.key])

    def claimed(cell: Cell, deferred: list[Cell]) -> bool:
        """Whether this sweep measures ``cell`` now (else it was found finished, or deferred: being measured)."""
        got = claims.try_claim(cell.key)
        if got == CLAIMED:
            return True
        if got is None:
            deferred.append(cell)
        else:
            found(cell, got)
        return False

    def measure_one(cell: Cell) -> None:
        if on_start:
            on_start(cell)
        sub = cell.needs_isolation if isolate == "auto" else bool(isolate)
        try:
            row, appended = run_in_subprocess(cell, timeout, phase_of(cell), out, extra) if sub else \
                (measure_in_process(cell, phase_of(cell)), False)
        except BaseException:
            claims.release(cell.key)
            raise
        finish(cell, row, appended)

    if executor == "slurm":
        _run_submitit(pending, finish, on_start, slurm or {})
    elif jobs > 1:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        def start_and_run(cell: Cell) -> tuple[str, Any]:
            got = claims.try_claim(cell.key)
            if got != CLAIMED:
                return "got", got
            if on_start:
                on_start(cell)
            try:
                return "row", run_in_subprocess(cell, timeout, phase_of(cell), out, extra)
            except BaseException:
                claims.release(cell.key)
                raise

        deferred: list[Cell] = []
        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            futures = {pool.submit(start_and_run, cell): cell for cell in pending}
            for fut in as_completed(futures):
                kind, value = fut.result()
                if kind == "row":
                    finish(futures[fut], *value)
                elif value is None:
                    deferred.append(futures[fut])
                else:
                    found(futures[fut], value)
        except BaseException:  # an interrupt: schedule nothing more, stop the workers, keep what finished
            pool.shutdown(wait=False, cancel_futures=True)
            stop_workers()
            claims.release_all()
            raise
        pool.shutdown()
    else:
        deferred = []
        for cell in pending:
            if claimed(cell, deferred):
                measure_one(cell)
    while executor != "slurm" and deferred:
        time.sleep(0.5)  # cells another sweep is measuring: wait for their rows (or take over a dead claim)
        waiting, deferred = deferred, []
        for cell in waiting:
            if claimed(cell, deferred):
                measure_one(cell)
    report.rows = [rows[c.key] for c in dict((c.key, c) for c in cells).values() if c.key in rows]
    return report


def measure_cell_dict(cell: dict[str, Any]) -> dict[str, Any]:
    """Measure a cell given as its flat dict (picklable entry point for cluster executors); a CUDA cell is checked
    here, on the compute node, where its device is resolved."""
    import socket

    import torch

    c = Cell.from_flat(cell)
    if c.run.device.startswith("cuda") and not torch.cuda.is_available():
        return error_row(c, "error", f"no CUDA device in this job (host {socket.gethostname()}); request a GPU "
                         "partition with --slurm-partition, or measure with --device cpu", 0.0)
    return measure_in_process(c)


def _run_submitit(cells: list[Cell], finish, on_start, params: dict[str, Any]) -> None:
    """Submit every cell as its own job with submitit and record rows as jobs complete."""
    try:
        import submitit
    except ImportError:
        raise ImportError("--executor slurm needs submitit: pip install 'qdm-bench[slurm]'") from None
    params = dict(params)
    folder = params.pop("folder", "results/submitit/%j")
    cluster = params.pop("cluster", None)
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params.setdefault("timeout_min", 60)
    if ex.cluster == "slurm":
        params.setdefault("gpus_per_node", 1)
    ex.update_parameters(**params)
    jobs = {}
    for cell in cells:
        if on_start:
            on_start(cell)
        jobs[ex.submit(measure_cell_dict, cell.flat())] = cell
    for job in submitit.helpers.as_completed(list(jobs)):
        cell = jobs[job]
        try:
            row = job.result()
        except Exception as e:  # noqa: BLE001 - a failed job is a result row
            row = error_row(cell, "error", f"job {job.job_id} failed: {str(e).strip().splitlines()[-1][:300]}", 0.0)
        finish(cell, row)


