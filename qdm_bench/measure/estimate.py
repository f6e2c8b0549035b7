"""Peak memory estimated without running: a meta-device trace of live tensor bytes (``docs/measurement.md`` §3.3)."""
from __future__ import annotations

import contextlib
import inspect
import math
import weakref
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from qdm_bench.measure.memory import MemoryResult

__all__ = ["LiveTensorBytes", "FusedSDPA", "estimate_peak_memory", "estimate_result", "sdpa_qkv"]


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


class FusedSDPA(torch.overrides.TorchFunctionMode):
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
    """Estimate the peak tensor memory of one forward without running it: meta device + live-bytes trace (docs/measurement.md §3.3).

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
    shim = FusedSDPA() if attention == "fused" else None
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


def estimate_result(peak: int, base: int, attention: str, shim: FusedSDPA | None, method: str = "live-bytes",
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
