"""Which scaled-dot-product-attention kernels a forward runs: flash, memory-efficient, cuDNN or math.

Each call of ``F.scaled_dot_product_attention`` is intercepted and asked ``torch._fused_sdp_choice`` with its own
arguments — the function SDPA itself calls to pick its kernel — so the answer is the same under ``no_grad``,
``inference_mode`` and ``sdpa_kernel`` restrictions (a dispatch-level watcher misses the fused kernels under
``inference_mode``).  The profiler agrees on CPU (``tests/test_sdpa.py``).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import torch
import torch.nn.functional as F

__all__ = ["sdpa_kernels", "KERNELS"]

# torch.nn.attention.SDPBackend values → the name recorded in rows
KERNELS = {0: "math", 1: "flash", 2: "memory-efficient", 3: "cudnn", 4: "fused-other"}


class _Choices(torch.overrides.TorchFunctionMode):
    """Counts the kernel SDPA picks for each of its calls."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v, *rest = args
            names = ("attn_mask", "dropout_p", "is_causal")
            opts = dict(zip(names, rest), **{n: kwargs[n] for n in (*names, "scale") if n in kwargs})
            try:
                choice = int(torch._fused_sdp_choice(q, k, v, **opts))
            except Exception:  # noqa: BLE001 - an argument the chooser does not take: record it as unknown
                choice = -2
            self.seen[KERNELS.get(choice, "unknown")] += 1
        return func(*args, **kwargs)


def sdpa_kernels(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """(fn(), the attention kernels it ran as "name×count, …", or None when it calls no attention)."""
    mode = _Choices()
    with mode:
        out = fn()
    if not mode.seen:
        return out, None
    return out, ", ".join(f"{k}×{v}" for k, v in sorted(mode.seen.items()))
