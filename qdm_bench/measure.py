"""Measurement primitives: peak memory (measured on CUDA and CPU, estimated on meta), latency, autocast, environment.

Everything here takes a callable ``fn()`` that runs **one forward**, already bound to its model and inputs (and wrapped
in ``torch.inference_mode()`` / autocast by the caller), and returns a plain dataclass that ``dataclasses.asdict``
turns into JSON.  The conventions are those of ``spec/measurement.md`` §3 and §4:

* memory is reported as a **delta above what is resident before the forward** (weights and inputs), with the absolute
  values beside it; a CUDA peak is the steady state after one warm-up call, the first-call peak is kept separately;
* the CPU peak is the RSS high-water mark of *this* process, so the caller runs each cell in a fresh subprocess;
* an estimate (meta device + ``MemTracker``) is flagged ``estimated=True`` and names its method and attention path;
* timings keep every sample and report median with p10/p90 and n, never a bare mean.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import inspect
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = [
    "MemoryResult", "TimingResult", "LiveTensorBytes", "peak_memory_cuda", "peak_memory_cpu", "estimate_peak_memory",
    "estimate_result", "sdpa_qkv", "time_fn",
    "autocast_context", "environment_info", "is_oom", "percentile", "DTYPES",
]

MiB = 2**20


# -- results -----------------------------------------------------------------------------------------------------

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


# -- helpers -----------------------------------------------------------------------------------------------------

def _device(device: str | torch.device) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0–100) with linear interpolation between order statistics (numpy's default)."""
    if not samples:
        raise ValueError("percentile of an empty sample list")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


# -- peak memory: CUDA -------------------------------------------------------------------------------------------

def peak_memory_cuda(fn: Callable[[], Any], device: str | torch.device = "cuda", warmup: int = 1) -> MemoryResult:
    """Peak CUDA memory of ``fn()`` above the resident model and inputs (spec §3.1).

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
    """Peak resident-set growth of ``fn()`` in this process (spec §3.2); the caller runs it in a fresh subprocess.

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


# -- peak memory: estimate on the meta device --------------------------------------------------------------------

def _mem_tracker_cls():
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
    except Exception as e:  # ImportError, or torch.distributed missing from this build
        raise ImportError(
            "estimated memory needs torch.distributed._tools.mem_tracker.MemTracker, a private PyTorch API that this "
            f"torch ({torch.__version__}) does not provide ({type(e).__name__}: {e}); install the pinned torch "
            "version (2.13) with torch.distributed, or measure on a real device instead"
        ) from e
    return MemTracker


class _FusedSDPA(torch.overrides.TorchFunctionMode):
    """Replace ``F.scaled_dot_product_attention`` on meta tensors by a shim that allocates what a fused kernel does.

    A flash / memory-efficient kernel (CPU ``_scaled_dot_product_flash_attention_for_cpu``, CUDA flash or efficient)
    allocates the output (..., L, Ev) in q's dtype plus a float32 log-sum-exp (..., L), and never the L×S scores.
    The shim allocates exactly those two (the lse is dropped at once, as in inference) and counts the calls and the
    largest score matrix the math path would have materialised.  Real (non-meta) tensors go to the real function.
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.max_scores_bytes = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k, v = sdpa_qkv(args, kwargs)
            if isinstance(q, torch.Tensor) and q.device.type == "meta":
                batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
                L, S = q.shape[-2], k.shape[-2]
                out = torch.empty((*batch, L, v.shape[-1]), dtype=q.dtype, device=q.device)
                lse = torch.empty((*batch, L), dtype=torch.float32, device=q.device)
                del lse
                self.calls += 1
                self.max_scores_bytes = max(self.max_scores_bytes, math.prod(batch) * L * S * q.element_size())
                return out
        return func(*args, **kwargs)


class LiveTensorBytes(TorchDispatchMode):
    """Track the bytes of tensor storages created while active (on one device) and their running peak.

    Every op output whose storage is new (not a view or in-place result of an argument) adds its ``nbytes``; a weak
    reference subtracts them when the storage dies.  Storages that existed before (weights, inputs) are not counted,
    so ``peak`` is the peak *above* what was resident.  It agrees byte for byte with PyTorch's private ``MemTracker``
    (a test checks it) at a fraction of its cost on graphs with thousands of module calls (QDM at 1024²).
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        super().__init__()
        self.device = None if device is None else torch.device(device).type
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or (self.device and t.device.type != self.device):
                continue
            st = t.untyped_storage()
            key = st._cdata
            if key in inputs or key in self._sizes:
                continue
            self._sizes[key] = st.nbytes()
            self.live += self._sizes[key]
            weakref.finalize(st, self._free, key)
            self.peak = max(self.peak, self.live)
        return out


def estimate_peak_memory(
    model_factory: Callable[[], Any],
    forward_factory: Callable[..., Any] | None = None,
    *,
    attention: str = "fused",
    no_grad: bool = True,
    warmup: bool = True,
    tracker: str = "live-bytes",
) -> MemoryResult:
    """Estimate the peak tensor memory of one forward without running it: meta device + live-bytes trace (spec §3.3).

    Two ways to call it:

    * ``estimate_peak_memory(model_factory, forward_factory)``: ``model_factory()`` builds the model (it runs inside
      ``torch.device("meta")``, so parameters and buffers are meta tensors); ``forward_factory(model)`` (or
      ``forward_factory()`` if it takes no argument) returns ``fn``, a no-argument callable running one forward.
      ``forward_factory`` runs **outside** the meta device context, so it may compute data-dependent things (a QDM
      window plan from the real mask) on CPU; it must put the forward's inputs on meta itself (``.to("meta")`` or
      ``device="meta"``).
    * ``estimate_peak_memory(build)`` with ``build()`` returning ``(model, fn)`` (also run inside the meta context).

    ``fn()`` then runs inside ``torch.device("meta")`` (tensors created in ``forward`` land on meta too) and, unless
    ``no_grad=False``, under ``torch.no_grad()``.  With ``warmup=True`` a first call runs untracked (its peak is
    ``first_call_peak_bytes``) so that tables a model caches on its first call (positional tables, masks) count as
    resident, as in the steady state measured on CUDA.  The measured call is tracked by :class:`LiveTensorBytes`
    (``tracker="memtracker"``: PyTorch's ``MemTracker``, identical and much slower on graphs with many module calls).
    ``baseline_bytes`` = meta bytes created by the factories (parameters, buffers, inputs); ``peak_bytes`` = the peak
    of meta bytes allocated during ``fn()`` and live at once, the output included.  It is deterministic.

    **Attention.**  On meta, ``F.scaled_dot_product_attention`` has no fused kernel: the dispatcher picks the math
    path, which decomposes into bmm → softmax → bmm and materialises the (..., L, S) score matrix, and the scaled
    copy of it (softmax output) — about 2 × B·H·L·S·4 bytes at the peak in fp32.  That is not what runs on a real
    device: CPU takes ``_scaled_dot_product_flash_attention_for_cpu`` and CUDA flash / memory-efficient kernels,
    which allocate only the output and a float32 log-sum-exp.  So:

    * ``attention="fused"`` (default): SDPA on meta tensors is replaced by a shim allocating output + lse (method
      ``estimated:live-bytes-meta:sdpa-fused``).  It ignores kernel-internal workspaces (per-thread tiles on CPU,
      per-block shared memory on CUDA), which are small;
    * ``attention="math"``: the decomposition is left as is (``estimated:live-bytes-meta:sdpa-math``), the memory of
      the math backend (``sdpa_kernel(SDPBackend.MATH)``, or a GPU/dtype for which no fused kernel applies).

    Attention written out as explicit matmuls is counted as written, in both modes.  The estimate is a **lower
    bound** of a real run: no allocator rounding or fragmentation, no cuBLAS/cuDNN/oneDNN workspaces, no CUDA
    context, no non-tensor memory.
    """
    if attention not in ("fused", "math"):
        raise ValueError(f"attention must be 'fused' or 'math', got {attention!r}")
    if tracker not in ("live-bytes", "memtracker"):
        raise ValueError(f"tracker must be 'live-bytes' or 'memtracker', got {tracker!r}")
    meta = torch.device("meta")
    setup = LiveTensorBytes(meta)
    with setup:  # construction: tracked, so the resident bytes are known, but not part of the forward peak
        with meta:
            built = model_factory()
        if forward_factory is None:
            if not (isinstance(built, tuple) and len(built) == 2 and callable(built[1])):
                raise TypeError("estimate_peak_memory(build): build() must return (model, fn) when no "
                                "forward_factory is given")
            model, fn = built
        else:
            model = built
            try:
                n_params = len(inspect.signature(forward_factory).parameters)
            except (TypeError, ValueError):
                n_params = 1
            fn = forward_factory(model) if n_params >= 1 else forward_factory()
        if not callable(fn):
            raise TypeError(f"the forward factory must return a no-argument callable, got {type(fn).__name__}")
    base = setup.live
    shim = _FusedSDPA() if attention == "fused" else None
    grad_ctx = torch.no_grad() if no_grad else contextlib.nullcontext()
    shim_ctx = shim if shim is not None else contextlib.nullcontext()
    first_peak = None
    if warmup:  # first call untracked for the headline: tables cached on the first call then count as resident
        first = LiveTensorBytes(meta)
        with meta, grad_ctx, shim_ctx, first:
            out = fn()
            del out
        first_peak = first.peak
    if tracker == "memtracker":
        mt = _mem_tracker_cls()()
        with mt:
            with meta, grad_ctx, shim_ctx:
                out = fn()
            del out
        peak = mt.get_tracker_snapshot("peak").get(meta, {}).get("Total", 0) - \
            mt.get_tracker_snapshot("current").get(meta, {}).get("Total", 0)
        method = "memtracker"
    else:
        live = LiveTensorBytes(meta)
        with meta, grad_ctx, shim_ctx, live:
            out = fn()
            del out
        peak, method = live.peak, "live-bytes"
    del model, fn, built
    return estimate_result(peak, base, attention, shim, method=method, warmup=warmup, first_call_peak=first_peak)


def estimate_result(peak: int, base: int, attention: str, shim: _FusedSDPA | None, method: str = "live-bytes",
                    warmup: bool = True, first_call_peak: int | None = None) -> MemoryResult:
    """The :class:`MemoryResult` of a meta-device estimate: method name, attention path and limits in the notes."""
    notes = []
    if shim is not None:
        notes.append(f"SDPA assumed fused (output + fp32 lse only): {shim.calls} call(s) on meta replaced; the math "
                     f"path would materialise up to {shim.max_scores_bytes} bytes of scores per call")
    else:
        notes.append("SDPA decomposed (math path): the L×S score matrices are materialised, as the math backend "
                     "does; a fused kernel on a real device needs far less")
    notes.append("steady state after one untracked warm-up call" if warmup else "first call")
    notes.append("lower bound: tensor bytes only, no allocator rounding, kernel workspaces or runtime context")
    return MemoryResult(
        peak_bytes=peak, baseline_bytes=base, method=f"estimated:{method}-meta:sdpa-{attention}",
        estimated=True, absolute_peak_bytes=base + peak, first_call_peak_bytes=first_call_peak, attention=attention,
        notes="; ".join(notes),
    )


def sdpa_qkv(args: tuple, kwargs: dict) -> tuple[Any, Any, Any]:
    """(query, key, value) of a ``scaled_dot_product_attention`` call, given positionally or by name."""
    names = ("query", "key", "value")
    return tuple(args[i] if i < len(args) else kwargs.get(names[i]) for i in range(3))


# -- speed -------------------------------------------------------------------------------------------------------

def time_fn(
    fn: Callable[[], Any],
    device: str | torch.device = "cpu",
    warmup: int = 10,
    reps: int = 30,
    min_time: float = 0.0,
    max_time: float | None = None,
) -> TimingResult:
    """Time ``fn()``: ``warmup`` untimed calls, then timed reps, every sample kept (spec §4).

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


# -- autocast ----------------------------------------------------------------------------------------------------

DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def autocast_context(device: str | torch.device, dtype: str):
    """The autocast context for a cell: ``fp32`` → no autocast; ``bf16`` / ``fp16`` → ``torch.autocast``.

    Weights stay fp32; autocast runs eligible ops (linear, conv, matmul, SDPA) in the low precision.  fp16 autocast
    on CPU is refused (ValueError): use bf16 on CPU.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of fp32, bf16, fp16")
    device_type = torch.device(device).type
    low = DTYPES[dtype]
    if low is None:
        return contextlib.nullcontext()
    if device_type == "cpu" and low is torch.float16:
        raise ValueError("fp16 autocast on CPU is not supported by qdm-bench (slow or missing kernels); "
                         "use bf16 on CPU, or fp16 on a CUDA device")
    return torch.autocast(device_type=device_type, dtype=low)


# -- environment -------------------------------------------------------------------------------------------------

def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def _git_info() -> tuple[str | None, bool | None]:
    here = str(Path(__file__).resolve().parent)
    sha = _run(["git", "-C", here, "rev-parse", "HEAD"])
    if not sha:
        return None, None
    status = _run(["git", "-C", here, "status", "--porcelain"])
    return sha, (None if status is None else bool(status))


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _packages_hash() -> tuple[str | None, dict[str, str]]:
    """A short hash of all installed distributions (name==version) and the versions of a few key packages."""
    try:
        from importlib.metadata import distributions

        pkgs = sorted({f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in distributions()})
    except Exception:
        return None, {}
    key = {}
    for p in pkgs:
        name, _, ver = p.partition("==")
        if name in ("torch", "numpy", "einops", "triton", "qdm-bench", "torchmetrics", "pyiqa", "fvcore"):
            key[name] = ver
    return hashlib.sha256("\n".join(pkgs).encode()).hexdigest()[:16], key


def environment_info(device: str | torch.device = "cpu", full: bool = False) -> dict[str, Any]:
    """Environment metadata for a result row (spec §4.6); every value is JSON-serialisable.

    Keys: torch_version, cuda_version, cudnn_version, device, device_name (GPU name, or the CPU model), cpu_model,
    gpu (name, memory, capability, driver, clocks, MIG; CUDA only), threads, interop_threads, cudnn_benchmark,
    sdpa_backends (the global flash / mem_efficient / math / cudnn switches; the flash switch also gates the CPU
    fused kernel), git_commit, git_dirty, python_version, platform, hostname, timestamp (UTC ISO 8601),
    packages_hash, packages.  ``full=True`` adds ``torch.__config__.show()`` and ``parallel_info()``.
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda" and torch.cuda.is_available()
    sha, dirty = _git_info()
    cpu_model = _cpu_model()
    phash, key_pkgs = _packages_hash()
    info: dict[str, Any] = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if cuda else None,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "device": str(dev),
        "device_name": cpu_model,
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "gpu": None,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "sdpa_backends": {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "math": torch.backends.cuda.math_sdp_enabled(),
            "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
        },
        "git_commit": sha,
        "git_dirty": dirty,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "packages_hash": phash,
        "packages": key_pkgs,
    }
    if cuda:
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        gpu = {"name": props.name, "total_memory": int(props.total_memory),
               "capability": f"{props.major}.{props.minor}", "driver": None, "sm_clock_mhz": None,
               "max_sm_clock_mhz": None, "mig_mode": None}
        smi = _run(["nvidia-smi", f"--id={idx}", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,mig.mode.current",
                    "--format=csv,noheader,nounits"], timeout=5.0)
        if smi:
            parts = [p.strip() for p in smi.splitlines()[0].split(",")]
            if len(parts) == 4:
                gpu.update(driver=parts[0], sm_clock_mhz=parts[1], max_sm_clock_mhz=parts[2], mig_mode=parts[3])
        info["gpu"] = gpu
        info["device_name"] = props.name
    if full:
        info["torch_config"] = torch.__config__.show()
        info["parallel_info"] = torch.__config__.parallel_info()
    return info


# -- failures ----------------------------------------------------------------------------------------------------

_OOM_MESSAGES = ("out of memory", "defaultcpuallocator: can't allocate memory", "cannot allocate memory")


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory failure: ``torch.OutOfMemoryError``, ``MemoryError``, or a RuntimeError saying so."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return any(m in msg for m in _OOM_MESSAGES)
    return False
