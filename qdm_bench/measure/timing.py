"""Latency of one forward: warm-up, timed repetitions, median with p10/p90 (``docs/measurement.md`` §4)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from qdm_bench.measure.memory import _device

__all__ = ["TimingResult", "time_fn", "percentile", "PLUGIN"]


@dataclass
class TimingResult:
    """Latency samples of one callable (milliseconds) with their summary statistics."""

    samples_ms: list[float]
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    n: int
    warmup: int
    threads: int
    device: str
    method: str  # "cuda-events" or "perf_counter"
    stopped_early: bool = False  # max_time cut the run short of ``reps``
    notes: str | None = None

    def throughput(self, batch: int) -> float:
        """Images per second: ``batch / median``."""
        return batch / (self.median_ms / 1000.0) if self.median_ms > 0 else math.inf


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between order statistics (numpy's default)."""
    if not samples:
        raise ValueError("percentile of an empty sample list")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# -- speed -------------------------------------------------------------------------------------------------------

def time_fn(
    fn: Callable[[], Any],
    device: str | torch.device = "cpu",
    warmup: int = 10,
    reps: int = 30,
    min_time: float = 0.0,
    max_time: float | None = None,
    on_rep: Callable[[int], None] | None = None,
) -> TimingResult:
    """Time ``fn()``: ``warmup`` untimed calls, then timed reps, every sample kept (docs/measurement.md §4).

    CUDA: a CUDA event pair around each rep, synchronised after it (only device time between the events counts).
    Other devices: ``time.perf_counter()`` around each rep.  It runs ``reps`` reps, more while the total timed time
    is below ``min_time`` seconds, and stops early once the total timed time reaches ``max_time`` seconds (after at
    least 3 reps, or ``reps`` if fewer were asked) — so a slow CPU cell cannot run for an hour.  The thread count is
    whatever the caller fixed with ``torch.set_num_threads`` and is recorded.
    """
    if reps < 1:
        raise ValueError(f"reps must be at least 1, got {reps}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    dev = _device(device)
    cuda = dev.type == "cuda"
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(dev)
    min_reps = min(reps, 3)
    samples: list[float] = []
    total = 0.0
    stopped_early = False
    while True:
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(dev)
            ms = start.elapsed_time(end)
        else:
            t0 = time.perf_counter()
            fn()
            ms = (time.perf_counter() - t0) * 1000.0
        samples.append(ms)
        total += ms / 1000.0
        n = len(samples)
        if on_rep is not None:
            on_rep(n)
        if max_time is not None and total >= max_time and n >= min_reps:
            stopped_early = n < reps
            break
        if n >= reps and total >= min_time:
            break
    n = len(samples)
    note = f"stopped after {n} of {reps} reps: max_time {max_time} s reached" if stopped_early else None
    return TimingResult(
        samples_ms=samples, median_ms=percentile(samples, 50), p10_ms=percentile(samples, 10),
        p90_ms=percentile(samples, 90), mean_ms=sum(samples) / n, min_ms=min(samples), n=n, warmup=warmup,
        threads=torch.get_num_threads(), device=str(dev), method="cuda-events" if cuda else "perf_counter",
        stopped_early=stopped_early, notes=note,
    )


class SpeedPlugin:
    """Latency of one forward: warm-up (calls and seconds), then timed repetitions within a time budget."""

    name = "speed"
    columns = {
        "latency_median_ms": "median latency of one forward, ms", "latency_p10_ms": "10th percentile, ms",
        "latency_p90_ms": "90th percentile, ms", "latency_n": "timed repetitions",
        "throughput_img_s": "batch / median latency, images per second",
        "windows_per_s": "computed windows / median latency (mask-using models)",
        "achieved_tflops": "2 x macs / median latency (s) / 1e12: achieved TFLOP/s of one forward",
        "peak_tflops": "measured matmul peak of the device in the row's dtype, TFLOP/s (2 n^3 / best time; "
                       "docs/measurement.md §4.7)",
        "peak_matmul_n": "side n of the square matmul that measured peak_tflops",
        "peak_share": "achieved_tflops / peak_tflops",
        "sdpa_kernels": "attention kernels the forward ran, with call counts (flash, memory-efficient, "
                        "cudnn, math), seen on the first warm-up call",
    }

    def measure(self, ctx, row) -> None:
        """Time the real forward, or note why speed was not measured (CPU above --cpu-max-res)."""
        cell, run = ctx.cell, ctx.cell.run
        if not cell.real_run:
            ctx.notes.append(f"speed not measured: {cell.input.height}x{cell.input.width} on CPU is above "
                             f"--cpu-max-res {run.cpu_max_res}; raise it to force a (slow) CPU run")
            return
        _, fn = ctx.real()
        ctx.say("warm-up")
        deadline = time.perf_counter() + run.warmup_s
        for k in range(max(1, run.warmup)):
            if k == 0 and not cell.model.compile:  # the first warm-up call also tells which attention kernels run
                from qdm_bench.measure.sdpa import sdpa_kernels

                row["sdpa_kernels"] = sdpa_kernels(fn)[1]
            else:
                fn()
            if time.perf_counter() > deadline:
                break
        ctx.say("timing")
        last = [time.perf_counter()]

        def on_rep(n: int) -> None:  # a phase line at most every 2 s: "timing 12/30 reps"
            if time.perf_counter() - last[0] > 2.0 or n == run.reps:
                last[0] = time.perf_counter()
                ctx.say(f"timing {n}/{run.reps} reps")

        tm = time_fn(fn, run.device, warmup=0, reps=run.reps, max_time=run.max_time_s, on_rep=on_rep)
        row.update(latency_median_ms=tm.median_ms, latency_p10_ms=tm.p10_ms, latency_p90_ms=tm.p90_ms,
                   latency_n=tm.n, throughput_img_s=cell.input.batch * 1000.0 / tm.median_ms)
        if ctx.plan is not None:
            row["windows_per_s"] = ctx.plan.n_selected * 1000.0 / tm.median_ms
        self._throughput(ctx, row, tm.median_ms)

    @staticmethod
    def _throughput(ctx, row, median_ms: float) -> None:
        """Achieved TFLOP/s from the row's MACs (counted by the shared meta pass if absent) next to the peak."""
        from qdm_bench.measure.throughput import achieved_tflops, peak_with_note

        run = ctx.cell.run
        macs = row.get("macs")
        if macs is None:
            try:
                macs = ctx.count().macs  # the same cached meta-device pass the macs plugin reads
            except Exception as e:  # noqa: BLE001 - a failed count must not lose the latency
                ctx.notes.append(f"achieved_tflops not computed: MACs count failed "
                                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        ctx.say("peak")
        peak, n, note = peak_with_note(run.device, ctx.cell.input.dtype, run.threads)
        if note:
            ctx.notes.append(note)
        achieved = achieved_tflops(macs, median_ms)
        row.update(achieved_tflops=achieved, peak_tflops=peak, peak_matmul_n=n,
                   peak_share=achieved / peak if achieved is not None and peak else None)


PLUGIN = SpeedPlugin()
