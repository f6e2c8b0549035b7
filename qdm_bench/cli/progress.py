"""Progress of a sweep that a person or a log can read: a bar on a terminal, plain lines elsewhere.

Off a terminal (CI, Slurm, ``nohup``, a log file) every cell gets a start line, a line for a phase that lasts
longer than :data:`PHASE_AFTER_S` seconds (build, count, estimate, memory, warm-up, timing with reps done,
sampling), and an end line with its status, its wall time and the sweep's ETA.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

import click

__all__ = ["SweepProgress", "PHASE_AFTER_S"]

PHASE_AFTER_S = 3.0  # a phase gets its own line once it has lasted this long (off a terminal)
PHASE_ENV = "QDM_BENCH_PHASE_AFTER"  # seconds, overriding PHASE_AFTER_S (0: a line for every phase, at once)
REPEAT_S = 10.0  # a long phase that keeps reporting (timing reps) gets at most one line this often


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class SweepProgress:
    """Callbacks for :func:`qdm_bench.measure.runner.run_cells`: ``start``, ``phase``, ``done``."""

    def __init__(self, command: str, total: int, stream: Any = None, interactive: bool | None = None):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.total, self.count, self.measured_s, self.measured = total, 0, 0.0, 0
        self._running: dict[str, dict[str, Any]] = {}  # cell key → label, start, phase, phase start, last line
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._bar = None
        if self.interactive:
            self._bar = click.progressbar(length=total, label=command, file=self.stream, show_pos=True,
                                          item_show_func=lambda item: item if isinstance(item, str) else None)
        self.after = float(os.environ.get(PHASE_ENV, PHASE_AFTER_S))
        self._ticker = None if self.interactive else threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> "SweepProgress":
        if self._bar is not None:
            self._bar.__enter__()
        if self._ticker is not None:
            self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def _line(self, text: str) -> None:
        click.echo(text, file=self.stream)

    def start(self, cell: Any) -> None:
        """A cell starts."""
        now = time.monotonic()
        with self._lock:
            self._running[cell.key] = dict(label=cell.label(), start=now, phase=None, since=now, shown=None,
                                           shown_at=0.0)
            index = self.count + len(self._running)
        if self._bar is not None:
            self._bar.update(0, f"{cell.label()}: measuring")
        else:
            self._line(f"[{index}/{self.total}] start {cell.label()}")

    def phase(self, cell: Any, phase: str) -> None:
        """A cell enters a phase (its line comes later, if the phase lasts)."""
        with self._lock:
            state = self._running.get(cell.key)
            if state is None:
                return
            if (state["phase"] or "").split(" ")[0] != phase.split(" ")[0]:
                state["since"] = time.monotonic()  # a new kind of phase; "timing 3/30 reps" continues "timing"
            state["phase"] = phase
            if self._bar is None and self.after <= 0:
                state["shown"] = phase
                self._line(f"      {state['label']}: {phase} "
                           f"({_duration(time.monotonic() - state['start'])} into the cell)")
        if self._bar is not None:
            self._bar.update(0, f"{cell.label()}: {phase}")

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            now = time.monotonic()
            with self._lock:
                for state in self._running.values():
                    phase = state["phase"]
                    if phase is None or phase == state["shown"] or now - state["since"] < self.after:
                        continue
                    if state["shown"] and state["shown"].split(" ")[0] == phase.split(" ")[0] \
                            and now - state["shown_at"] < REPEAT_S:
                        continue
                    state["shown"], state["shown_at"] = phase, now
                    self._line(f"      {state['label']}: {phase} ({_duration(now - state['start'])} into the cell)")

    def done(self, cell: Any, row: dict[str, Any]) -> None:
        """A cell finished (or was found finished in the results file)."""
        with self._lock:
            state = self._running.pop(cell.key, None)
            self.count += 1
            elapsed = None if state is None else time.monotonic() - state["start"]
            if elapsed is not None:
                self.measured += 1
                self.measured_s += elapsed
            remaining = self.total - self.count
            eta = self.measured_s / self.measured * remaining if self.measured else None
        status = row.get("status", "?") + (" (cached)" if row.get("cached") else "")
        if self._bar is not None:
            self._bar.update(1, f"{cell.label()}: {status}")
            return
        msg = f" - {row['message']}" if row.get("status") in ("error", "oom") and row.get("message") else ""
        took = "" if elapsed is None else f" in {_duration(elapsed)}"
        left = "" if eta is None or not remaining else f"; {remaining} left, ETA {_duration(eta)}"
        self._line(f"[{self.count}/{self.total}] done {cell.label()}: {status}{took}{left}{msg}")
