"""Peak memory of one forward, measured: CUDA ``max_memory_allocated`` and the CPU resident-set high-water mark.

Everything here takes a callable ``fn()`` that runs **one forward**, already bound to its model and inputs (and
wrapped in ``torch.inference_mode()`` / autocast by the caller), and returns a :class:`MemoryResult`.  Memory is
reported as a **delta above what is resident before the forward** (weights and inputs), with the absolute values
beside it; a CUDA peak is the steady state after one warm-up call, the first-call peak is kept separately; the CPU
peak is the RSS high-water mark of *this* process, so the caller runs each cell in a fresh subprocess
(``docs/measurement.md`` §3).  Estimates without running (meta device) are in :mod:`qdm_bench.measure.estimate`.
"""
from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["MemoryResult", "peak_memory_cuda", "peak_memory_cpu", "MiB", "PLUGIN"]

MiB = 2**20


@dataclass
class MemoryResult:
    """One peak-memory figure.

    ``peak_bytes`` is the headline: the peak **above** ``baseline_bytes`` (what was resident before the forward:
    weights, buffers, inputs).  ``absolute_peak_bytes`` is the raw peak (CUDA ``max_memory_allocated``, CPU ``VmHWM``,
    estimated total live tensor bytes).  ``peak_reserved_bytes`` is the CUDA caching-allocator growth (None elsewhere).
    ``first_call_peak_bytes`` is the delta peak of the first (warm-up) call where it could be separated, else None.
    """

    peak_bytes: int
    baseline_bytes: int
    method: str
    estimated: bool = False
    peak_reserved_bytes: int | None = None
    baseline_reserved_bytes: int | None = None
    absolute_peak_bytes: int | None = None
    absolute_peak_reserved_bytes: int | None = None
    first_call_peak_bytes: int | None = None
    attention: str | None = None  # estimates only: the SDPA path assumed ("fused" or "math")
    notes: str | None = None

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / MiB


def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


# -- peak memory: CUDA -------------------------------------------------------------------------------------------

def peak_memory_cuda(fn: Callable[[], Any], device: str | torch.device = "cuda", warmup: int = 1) -> MemoryResult:
    """Peak CUDA memory of ``fn()`` above the resident model and inputs (docs/measurement.md §3.1).

    The baselines ``memory_allocated`` / ``memory_reserved`` are taken before the first call.  ``warmup`` calls run
    first (their peak is ``first_call_peak_bytes``; cuDNN autotune workspaces and lazy initialisation land there), then
    the peak statistics are reset and one more call gives the steady-state peak.  With ``warmup=0`` the single measured
    call is the first call.  Method ``cuda-max-allocated``.
    """
    dev = _device(device)
    if dev.type != "cuda":
        raise ValueError(f"peak_memory_cuda needs a CUDA device, got {device!r}; use peak_memory_cpu on CPU")
    if not torch.cuda.is_available():
        raise RuntimeError("peak_memory_cuda: CUDA is not available in this torch build / machine")
    torch.cuda.synchronize(dev)
    base = torch.cuda.memory_allocated(dev)
    base_res = torch.cuda.memory_reserved(dev)
    first = None
    if warmup > 0:
        torch.cuda.reset_peak_memory_stats(dev)
        for _ in range(warmup):
            out = fn()
            del out
        torch.cuda.synchronize(dev)
        first = torch.cuda.max_memory_allocated(dev) - base
    torch.cuda.reset_peak_memory_stats(dev)
    out = fn()
    torch.cuda.synchronize(dev)
    del out
    peak_abs = torch.cuda.max_memory_allocated(dev)
    peak_res_abs = torch.cuda.max_memory_reserved(dev)
    notes = "steady state after %d warm-up call(s)" % warmup if warmup else "first call (no warm-up)"
    return MemoryResult(
        peak_bytes=peak_abs - base, baseline_bytes=base, method="cuda-max-allocated", estimated=False,
        peak_reserved_bytes=peak_res_abs - base_res, baseline_reserved_bytes=base_res, absolute_peak_bytes=peak_abs,
        absolute_peak_reserved_bytes=peak_res_abs, first_call_peak_bytes=first, notes=notes,
    )


# -- peak memory: CPU --------------------------------------------------------------------------------------------

_PROC_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _proc_status_kib(key: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM) in KiB, or None where unavailable."""
    try:
        with open(_PROC_STATUS) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    """Reset this process's RSS high-water mark (Linux >= 4.0: write 5 to clear_refs); False where not allowed."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


def peak_memory_cpu(fn: Callable[[], Any], warmup: int = 1, reset_hwm: bool = True) -> MemoryResult:
    """Peak resident-set growth of ``fn()`` in this process (docs/measurement.md §3.2); the caller runs it in a fresh subprocess.

    Call it after the model and inputs exist.  The baseline is the current RSS (``VmRSS``).  Preferred method
    ``cpu-rss-hwm``: reset the high-water mark through ``/proc/self/clear_refs``, run the ``warmup`` call(s) and read
    ``VmHWM`` (→ ``first_call_peak_bytes``), reset again and run one steady call (→ ``peak_bytes``).  Both are taken
    against the same pre-call baseline, so memory the first call keeps (caches, allocator slack) still counts.

    Where clear_refs is not allowed (some containers, non-Linux) or ``reset_hwm=False``: method ``cpu-ru_maxrss``,
    baseline = ``ru_maxrss`` before, peak = ``ru_maxrss`` after all calls.  That covers the first call too, and it
    under-reports when something earlier in the process (imports, model construction) peaked above the current RSS —
    hence the fresh subprocess.  Note that a child started by ``subprocess`` (vfork / posix_spawn) inherits its
    parent's ``ru_maxrss`` across exec; the result's notes warn when the baseline is above the current RSS.
    (``VmHWM`` belongs to the new address space and is not inherited.)

    RSS counts touched pages only (an untouched ``torch.empty`` is free) and includes non-tensor memory (oneDNN
    workspaces, allocator slack, code paged in), so it is the honest process-level number, not a tensor count.
    """
    rss_kib = _proc_status_kib("VmRSS")
    can_reset = reset_hwm and rss_kib is not None and _proc_status_kib("VmHWM") is not None and _reset_hwm()
    if can_reset:
        base = rss_kib * 1024
        first = None
        if warmup > 0:
            for _ in range(warmup):
                out = fn()
                del out
            first = (_proc_status_kib("VmHWM") or 0) * 1024 - base
            _reset_hwm()
        out = fn()
        del out
        peak_abs = (_proc_status_kib("VmHWM") or 0) * 1024
        notes = ("steady state after %d warm-up call(s); " % warmup if warmup else "first call (no warm-up); ")
        notes += "RSS high-water mark above the RSS before the first call"
        return MemoryResult(peak_bytes=peak_abs - base, baseline_bytes=base, method="cpu-rss-hwm",
                            absolute_peak_bytes=peak_abs, first_call_peak_bytes=first, notes=notes)
    base = _ru_maxrss_bytes()
    for _ in range(max(0, warmup) + 1):
        out = fn()
        del out
    peak_abs = _ru_maxrss_bytes()
    why = "disabled" if not reset_hwm else "not available (clear_refs refused or no /proc)"
    notes = (f"high-water-mark reset {why}: ru_maxrss growth over the first call and {warmup} more; valid only in "
             f"a fresh process where nothing peaked above the baseline before")
    if rss_kib is not None and base > rss_kib * 1024 + 16 * MiB:
        notes += (f"; WARNING: ru_maxrss before the calls ({base / MiB:.0f} MiB) was already above the RSS "
                  f"({rss_kib / 1024:.0f} MiB), an earlier peak or one inherited from the parent process (a "
                  f"vfork/posix_spawn child keeps its parent's ru_maxrss across exec), so growth below it is missed")
    return MemoryResult(
        peak_bytes=peak_abs - base, baseline_bytes=base, method="cpu-ru_maxrss", absolute_peak_bytes=peak_abs,
        notes=notes,
    )


class MemoryPlugin:
    """Peak memory of one forward above the resident weights and inputs: measured, or estimated on meta."""

    name = "memory"
    columns = {
        "peak_mem_bytes": "peak memory of one forward above the resident weights and inputs (CUDA max allocated, "
                          "CPU resident-set growth, or a meta-device estimate)",
        "peak_reserved_bytes": "CUDA caching-allocator growth (reserved), where measured",
        "mem_method": "how peak_mem_bytes was obtained (cuda-max-allocated, cpu-rss-hwm, estimated:…)",
        "mem_estimated": "true for a meta-device estimate (a lower bound), never mixed with measured values",
    }

    def measure(self, ctx, row) -> None:
        """Measure on a real run (CUDA or CPU in this fresh process), else take the meta pass's estimate."""
        cell = ctx.cell
        if cell.real_run:
            _, fn = ctx.real()
            ctx.say("memory")
            mem = peak_memory_cuda(fn, cell.run.device) if cell.run.device != "cpu" else peak_memory_cpu(fn)
            row.update(peak_mem_bytes=mem.peak_bytes, peak_reserved_bytes=mem.peak_reserved_bytes,
                       mem_method=mem.method, mem_estimated=mem.estimated)
            return
        mem = ctx.count().memory
        row.update(peak_mem_bytes=mem.peak_bytes, mem_method=mem.method, mem_estimated=True)
        if cell.input.dtype != "fp32":
            ctx.notes.append(f"estimated memory assumes fp32 activations (no autocast on the meta device); "
                             f"{cell.input.dtype} needs less")


PLUGIN = MemoryPlugin()
