"""Parameter counting on the meta device (no weights are allocated)."""
from __future__ import annotations

import torch

from qdm_bench.registry import create_model, resolve

__all__ = ["count_parameters", "model_summary"]


def count_parameters(model: torch.nn.Module) -> dict[str, int | None]:
    """Learnable, frozen and buffer element counts, and the paper's convention where the model defines one."""
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    buffers = sum(b.numel() for b in model.buffers())
    paper = None
    if hasattr(model, "param_counts"):  # QDM: Table-5 convention (frozen sin-cos tables at the 128² build size);
        counts = model.param_counts()  # BI-DiffSR: deployed count, binary weights / 32 + full-precision ones
        paper = counts.get("paper", counts.get("table5"))
    return {"learnable": learnable, "frozen": frozen, "buffers": buffers, "paper": paper}


def model_summary(name: str, **overrides) -> dict:
    """One row describing a registered model: its registry facts and parameter counts (built on meta)."""
    info = resolve(name)
    with torch.device("meta"):
        model = create_model(name, **overrides)
    counts = count_parameters(model)
    return {
        "model": info.name, "family": info.family, "space": info.space,
        "multiple": getattr(model, "input_multiple", info.multiple), "uses_mask": info.uses_mask,
        "params_learnable": counts["learnable"], "params_frozen": counts["frozen"],
        "params_paper": counts["paper"], "buffers": counts["buffers"],
    }
