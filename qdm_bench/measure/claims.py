"""Cells claimed by the sweeps writing one results file, so two sweeps on one file never measure a cell twice.

A claim is a small file ``<results>.claims/<hash of the cell key>`` holding the claimer's host and process id,
created under the results file's lock after checking that the cell has no finished row yet.  A claim whose process
is gone (same host) is stale and taken over; the claim is removed once the cell's row is written.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from qdm_bench.measure.results import FINISHED, locked

__all__ = ["Claims", "CLAIMED"]

CLAIMED = "claimed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    """Claim, release and look up the cells of one results file."""

    def __init__(self, results: str | Path):
        self.results = Path(results)
        self.folder = Path(str(results) + ".claims")
        self.me = f"{socket.gethostname()} {os.getpid()}"

    def _path(self, key: str) -> Path:
        return self.folder / hashlib.sha1(key.encode("utf-8")).hexdigest()

    def _live(self, path: Path) -> bool:
        try:
            host, pid = path.read_text().split()
        except (OSError, ValueError):
            return False
        if f"{host} {pid}" == self.me:
            return True
        return host != socket.gethostname() or _alive(int(pid))  # another host's claim is trusted

    @staticmethod
    def _finished_in(f: Any, key: str) -> dict[str, Any] | None:
        f.seek(0)
        for line in f.read().decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and row.get("key") == key and row.get("status") in FINISHED:
                return row
        return None

    def finished(self, key: str) -> dict[str, Any] | None:
        """The finished row of a cell in the results file, or None."""
        with locked(self.results) as f:
            return self._finished_in(f, key)

    def try_claim(self, key: str) -> str | dict[str, Any] | None:
        """``CLAIMED`` (measure it), the finished row (someone measured it), or None (someone is measuring it)."""
        with locked(self.results) as f:
            row = self._finished_in(f, key)
            if row is not None:
                return row
            path = self._path(key)
            if path.exists() and self._live(path):
                return None
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(self.me)
            return CLAIMED

    def release_all(self) -> None:
        """Drop every claim of this process (an interrupted sweep)."""
        with locked(self.results):  # under the lock: another sweep may be creating the folder to claim a cell
            try:
                for path in self.folder.iterdir():
                    if path.read_text() == self.me:
                        path.unlink()
                self.folder.rmdir()
            except OSError:
                pass

    def release(self, key: str) -> None:
        """Drop this process's claim of a cell (its row is written, or it failed)."""
        path = self._path(key)
        with locked(self.results):  # the folder is removed only while no other sweep can be claiming into it
            try:
                if path.read_text() == self.me:
                    path.unlink()
                if self.folder.exists() and not any(self.folder.iterdir()):
                    self.folder.rmdir()
            except OSError:
                pass
