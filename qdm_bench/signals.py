"""SIGINT and SIGTERM (Ctrl-C, Slurm, ``timeout``) handled as one: record the signal, optionally interrupt."""
from __future__ import annotations

import contextlib
import signal
import threading

__all__ = ["on_stop_signals"]


@contextlib.contextmanager
def on_stop_signals(interrupt: bool):
    """While active (main thread only), SIGINT and SIGTERM set ``flag["signum"]``; with ``interrupt`` they also
    raise KeyboardInterrupt.  The previous handlers are restored on exit."""
    flag: dict[str, int | None] = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, _frame):
        flag["signum"] = signum
        if interrupt:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
