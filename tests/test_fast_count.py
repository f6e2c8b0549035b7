"""Counting in seconds, exactly: the compressed replay of a planned forward gives the full trace's numbers.

The oracle is the full trace (every chunk of the plan traced on the meta device); the shortcut traces each run of
equal-shape chunks twice and adds the MACs of the others.  Checked for several window densities, batch > 1,
non-square inputs and chunk sizes that make many chunks of several shapes: MACs, attention MACs and calls, and the
estimated peak bytes must be identical.
"""
import pytest
import torch

from qdm_bench.measure.macs import _compress, count_model_macs
from qdm_bench.registry import create_model, resolve

CASES = [  # (height, width, batch, density or None for the dense path, chunk size)
    (64, 64, 1, None, 3),
    (64, 96, 2, 0.5, 4),
    (96, 64, 3, 0.3, 5),
    (96, 64, 3, 0.5, 5),
    (64, 128, 2, 0.8, 7),
    (128, 64, 1, 1.0, 64),
    (48, 80, 2, 0.6, 2),
]


def _count(h, w, batch, density, chunk, replay):
    with torch.device("meta"):
        model = create_model("qdm-t", chunk_size=chunk).eval()
    mask = None
    if density is not None:
        mask = model.random_mask(batch, h, w, density, generator=torch.Generator().manual_seed(h + w + batch))
    return count_model_macs(model, resolve("qdm-t"), h, w, batch, mask=mask, estimate_memory=True, replay=replay)


@pytest.mark.parametrize("h,w,batch,density,chunk", CASES)
def test_compressed_replay_equals_the_full_trace(h, w, batch, density, chunk):
    full = _count(h, w, batch, density, chunk, "full")
    fast = _count(h, w, batch, density, chunk, "compressed")
    assert (fast.macs, fast.attention_macs, fast.attention_calls) == (full.macs, full.attention_macs,
                                                                     full.attention_calls)
    assert fast.memory.peak_bytes == full.memory.peak_bytes
    assert (fast.active_windows, fast.total_windows) == (full.active_windows, full.total_windows)


def test_the_cases_exercise_the_shortcut():
    """The cases above really cut chunks, of more than one shape (else the test above would prove nothing)."""
    with torch.device("meta"):
        model = create_model("qdm-t", chunk_size=5).eval()
    mask = model.random_mask(3, 96, 64, 0.5, generator=torch.Generator().manual_seed(0))
    plan = model.plan(mask, 3, 96, 64)
    traced, cut = _compress(plan)
    assert len(traced.steps) < len(plan.steps) and sum(cut.values()) == len(plan.steps) - len(traced.steps)
    assert len({tuple(w.shape) for _, w in plan.steps}) >= 2


def test_models_without_a_plan_count_the_same_either_way():
    with torch.device("meta"):
        model = create_model("dit-s/8", depth=2).eval()
    a = count_model_macs(model, resolve("dit-s/8"), 64, 32, 2, replay="full")
    b = count_model_macs(model, resolve("dit-s/8"), 64, 32, 2)
    assert a.macs == b.macs and a.attention_macs == b.attention_macs
