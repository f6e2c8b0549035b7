"""Which scaled-dot-product-attention kernels a forward actually runs: flash, memory-efficient, cuDNN or math."""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["sdpa_kernels", "KERNELS"]

# ATen kernels behind F.scaled_dot_product_attention → the name recorded in rows
KERNELS = {
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash-cpu",
    "_scaled_dot_product_efficient_attention": "memory-efficient",
    "_scaled_dot_product_cudnn_attention": "cudnn",
    "_scaled_dot_product_fused_attention_overrideable": "fused-other",
}


class _Calls(torch.overrides.TorchFunctionMode):
    """Counts calls of F.scaled_dot_product_attention."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.scaled_dot_product_attention:
            self.n += 1
        return func(*args, **(kwargs or {}))


class _Kernels(TorchDispatchMode):
    """Counts the fused attention kernels that reach dispatch (the math path decomposes into matmuls instead)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        if name in KERNELS:
            self.seen[KERNELS[name]] += 1
        return func(*args, **(kwargs or {}))


def sdpa_kernels(fn: Callable[[], Any]) -> tuple[Any, str | None]:
    """(fn(), the attention kernels it ran as "name×count, …" — "math" for calls no fused kernel served — or None
    when it calls no attention)."""
    calls, kernels = _Calls(), _Kernels()
    with calls, kernels:
        out = fn()
    seen = Counter(kernels.seen)
    math_calls = calls.n - sum(seen.values())
    if math_calls > 0:
        seen["math"] += math_calls
    if not seen:
        return out, None
    return out, ", ".join(f"{k}×{v}" for k, v in sorted(seen.items()))
