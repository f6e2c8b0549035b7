"""Achieved throughput next to the limit: a measured matmul peak per device and dtype (``docs/measurement.md`` §4.7).

The peak is one large square ``torch.matmul`` (n = 4096 on CUDA; 1024 or 2048 on CPU, so that it takes well under a
second at the row's thread count), timed after a warm-up call, best of a few reps, as ``2 n³ / t``.  It is measured
once per process, device, dtype and thread count, and cached.
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch

__all__ = ["peak_matmul_tflops", "achieved_tflops", "clear_cache", "CUDA_N", "CPU_N"]

CUDA_N = 4096
CPU_N = (1024, 2048)  # the CPU size: 2048 where a 1024 call is fast (< 30 ms), else 1024
_CPU_GROW_S = 0.03
_SLOW_S = 0.25  # a 1024 probe slower than this (an emulated dtype): one timed rep only

_CACHE: dict[tuple[str, str, int], tuple[float | None, int, str | None]] = {}


def _dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """The torch dtype of a row's dtype name (fp32 / bf16 / fp16), or the dtype itself."""
    if isinstance(dtype, torch.dtype):
        return dtype
    from qdm_bench.measure.environment import DTYPES

    return DTYPES[dtype or "fp32"] or torch.float32


def _sync(dev: torch.device) -> None:
    """Wait for the device's queued work (CUDA only)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _time_matmul(n: int, dev: torch.device, dt: torch.dtype, reps: int) -> float:
    """Best wall time (s) of ``reps`` n×n matmuls, after one untimed warm-up call."""
    with torch.inference_mode():
        a = torch.randn(n, n, device=dev).to(dt)
        b = torch.randn(n, n, device=dev).to(dt)
        torch.matmul(a, b)
        _sync(dev)
        best = math.inf
        for _ in range(reps):
            t0 = time.perf_counter()
            torch.matmul(a, b)
            _sync(dev)
            best = min(best, time.perf_counter() - t0)
    return best


def _measure(dev: torch.device, dt: torch.dtype) -> tuple[float | None, int, str | None]:
    """(TFLOP/s, n, note): choose n, time the matmul, turn it into TFLOP/s."""
    if dev.type == "cuda":
        n, reps = CUDA_N, 10
    else:
        small, large = CPU_N
        probe = _time_matmul(small, dev, dt, 1)
        n, reps = (large, 3) if probe < _CPU_GROW_S else (small, 1 if probe > _SLOW_S else 3)
        if n == small and reps == 1:
            return 2.0 * n**3 / probe / 1e12, n, f"{dt} matmul is slow here ({probe:.2f} s at {n}): one rep"
    t = _time_matmul(n, dev, dt, reps)
    return (2.0 * n**3 / t / 1e12 if t > 0 else None), n, None


def peak_with_note(device: str | torch.device, dtype: Any = "fp32",
                   threads: int | None = None) -> tuple[float | None, int, str | None]:
    """(TFLOP/s or None, n, note or None): the cached matmul peak of a device, dtype and thread count."""
    dev = torch.device(device)
    dt = _dtype(dtype)
    old = torch.get_num_threads()
    if threads is not None and dev.type == "cpu":
        torch.set_num_threads(threads)
    try:
        key = (str(dev), str(dt), torch.get_num_threads())
        if key not in _CACHE:
            try:
                _CACHE[key] = _measure(dev, dt)
            except (RuntimeError, NotImplementedError) as e:  # a dtype without matmul kernels on this device
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                _CACHE[key] = (None, CUDA_N if dev.type == "cuda" else CPU_N[0],
                               f"peak_tflops not measured: {dt} matmul failed on {dev}: {msg}")
        return _CACHE[key]
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)


def peak_matmul_tflops(device: str | torch.device, dtype: Any = "fp32",
                       threads: int | None = None) -> tuple[float | None, int]:
    """(TFLOP/s, n) of one n×n matmul on ``device`` in ``dtype`` (measured once per process, then cached)."""
    tflops, n, _ = peak_with_note(device, dtype, threads)
    return tflops, n


def achieved_tflops(macs: float | None, latency_ms: float | None) -> float | None:
    """2 · macs / latency (s) / 1e12, or None where either is missing or the latency is not positive."""
    if macs is None or latency_ms is None or not latency_ms > 0:
        return None
    return 2.0 * macs / (latency_ms / 1e3) / 1e12


def clear_cache() -> None:
    """Forget every measured peak (tests)."""
    _CACHE.clear()
