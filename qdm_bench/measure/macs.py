"""MAC counting: exact, fast, at any resolution on a CPU-only machine (docs/measurement.md §2).

Convention: multiply-accumulates of convolutions and matmuls, **attention products (QKᵀ and AV) included**; norms,
softmax, activations and element-wise ops excluded.  FLOPs = 2·MACs.

How: the model is built inside ``torch.device("meta")`` (no weights), fed meta inputs, and run under torch's
``FlopCounterMode`` inside the meta device context, where ``scaled_dot_product_attention`` decomposes into counted
matmuls.  Data-dependent window selection (QDM) is done first on the real mask on the CPU (``model.plan``); only the
computation on that window list (``model.compute``) runs on meta.  Attention MACs are also summed separately, per
SDPA call, from the call's shapes.

``--breakdown`` tables come from the same meta count (per module, any resolution) or from fvcore on real tensors with
an SDPA handle (small resolutions; fvcore also prices norms and upsampling, so its total is a little higher).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from qdm_bench.measure.estimate import sdpa_qkv
from qdm_bench.registry import create_model, resolve

__all__ = ["MacCount", "count_macs", "count_model_macs", "PLUGIN", "model_cost_extras", "sdpa_macs", "mac_breakdown", "fvcore_breakdown", "count_module_macs"]


@dataclass
class MacCount:
    """MACs of one network evaluation of the whole batch, its attention share, and of a whole super-resolution."""

    model: str
    height: int
    width: int
    batch: int
    macs: int
    attention_macs: int
    attention_calls: int
    num_steps: int
    extra_sr_macs: int = 0  # pre/post stages of one super-resolution (none for the built-in models)
    active_windows: int | None = None
    total_windows: int | None = None
    by_module: dict[str, int] = field(default_factory=dict, repr=False)
    memory: Any = None  # a MemoryResult when an estimate was asked with the count

    @property
    def macs_per_sr(self) -> int:
        """num_steps network evaluations plus pre/post stages."""
        return self.num_steps * self.macs + self.extra_sr_macs

    @property
    def macs_per_image(self) -> float:
        return self.macs / self.batch


def sdpa_macs(q_shape, k_shape, v_shape) -> int:
    """MACs of one attention call: b·h·n_q·n_k·(d_qk + d_v) (torch's SDPA FLOP formula halved)."""
    q, k, v = (tuple(s) for s in (q_shape, k_shape, v_shape))
    if len(q) == 4 and len(k) == 4 and len(v) == 4:
        return sdpa_flop_count(q, k, v) // 2
    batch = math.prod(torch.broadcast_shapes(q[:-2], k[:-2], v[:-2]))
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


class _AttentionTally(torch.overrides.TorchFunctionMode):
    """Sum the MACs of every ``scaled_dot_product_attention`` call from its shapes (the op itself still runs)."""

    def __init__(self) -> None:
        super().__init__()
        self.macs = 0
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k, v = sdpa_qkv(args, kwargs)
            self.macs += sdpa_macs(q.shape, k.shape, v.shape)
            self.calls += 1
        return func(*args, **kwargs)


def _cpu_flash_flops(q_shape, k_shape, v_shape, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode formula for the CPU flash-attention op, which torch leaves uncounted (safety net)."""
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def _custom_mapping() -> dict:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)  # keyed by op packet
    return {op: _cpu_flash_flops} if op is not None else {}


def _forward_fn(model: torch.nn.Module, inputs: dict[str, Any], plan: Any = None, mask: torch.Tensor | None = None):
    """The callable whose MACs are counted: ``forward_planned`` on a precomputed plan, or the plain forward."""
    x, t, lq = inputs["x_t"], inputs["t"], inputs["lq"]
    if plan is not None:
        m = None if mask is None else mask.to("meta")
        return lambda: model.forward_planned(x, t, lq, plan, m)
    return lambda: model(x, t, lq)


def _meta_inputs(info, batch: int, h: int, w: int) -> dict[str, torch.Tensor]:
    meta = torch.device("meta")
    return {
        "x_t": torch.empty(batch, info.in_channels, h, w, device=meta),
        "t": torch.zeros(batch, dtype=torch.long, device=meta),
        "lq": torch.empty(batch, info.lq_channels, h, w, device=meta),
    }


def _as_hw(res: int | tuple[int, int]) -> tuple[int, int]:
    return (res, res) if isinstance(res, int) else (int(res[0]), int(res[1]))


def count_macs(name: str, res: int | tuple[int, int], batch: int = 1, mask: torch.Tensor | None = None,
               by_module_depth: int = 0, fused_attention: bool | None = None, estimate_memory: bool = False,
               **overrides: Any) -> MacCount:
    """Exact MACs of one forward of registered model ``name`` at ``res`` (H or (H, W)), counted on the meta device.

    Builds the model on the meta device with ``overrides`` and calls :func:`count_model_macs` (see there).
    """
    from qdm_bench.measure.estimate import LiveTensorBytes

    h, w = _as_hw(res)
    info = resolve(name)
    setup = LiveTensorBytes("meta")
    with setup, torch.device("meta"):
        model = create_model(name, **overrides).eval()
    return count_model_macs(model, info, h, w, batch, mask=mask, by_module_depth=by_module_depth,
                            fused_attention=fused_attention, estimate_memory=estimate_memory,
                            baseline_bytes=setup.live)


def count_model_macs(model: torch.nn.Module, info: Any, h: int, w: int, batch: int = 1,
                     mask: torch.Tensor | None = None, plan: Any = None, by_module_depth: int = 0,
                     fused_attention: bool | None = None, estimate_memory: bool = False,
                     baseline_bytes: int = 0, replay: str = "compressed") -> MacCount:
    """Exact MACs of one forward of a model built on the meta device, at H×W and ``batch``.

    ``mask`` (mask-using models: the patch-grid mask, a real tensor) selects windows first (``model.plan``, or the
    given ``plan``); None is the dense path (all windows).  ``by_module_depth`` > 0 also fills ``by_module`` with
    the MACs of every called module.  ``fused_attention`` (default: True unless a per-module breakdown is asked):
    attention calls are replaced by an output allocation and priced by formula instead of being decomposed into
    matmuls on meta — the same count, several times faster; the decomposed path credits attention to its modules
    in ``by_module``.  ``estimate_memory``: the counting call doubles as the warm-up of a fake-tensor memory
    estimate, and a second, tracked call fills ``memory`` (:func:`qdm_bench.measure.estimate.estimate_peak_memory`;
    ``baseline_bytes``: what building the model allocated).

    ``replay``: a planned forward computes its selected windows in chunks (``plan.steps``); ``"full"`` traces every
    chunk, ``"compressed"`` (default) traces each run of consecutive equal-shape chunks only twice and adds the
    MACs of the others, measured once per shape.  That is exact, not an approximation: a chunk's MACs depend only
    on its shape, and its live tensors only on its own shape and on what the chunk before it left alive, so the
    shortened chunk list has the same MACs per shape and the same sequence of (previous, current) shapes, hence
    the same peak (``tests/test_fast_count.py`` checks both against the full trace).
    """
    from qdm_bench.measure.estimate import FusedSDPA, LiveTensorBytes, estimate_result

    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if replay not in ("full", "compressed"):
        raise ValueError(f"replay must be 'full' or 'compressed', got {replay!r}")
    info.check_resolution(h, w, getattr(model, "input_multiple", None))
    if fused_attention is None:
        fused_attention = by_module_depth == 0
    if plan is None and hasattr(model, "plan") and hasattr(model, "forward_planned"):
        if mask is not None and mask.device.type == "meta":
            raise ValueError("the mask must be a real tensor: window selection runs on real data before counting")
        plan = model.plan(None if mask is None else mask.cpu(), batch, h, w)
    setup = LiveTensorBytes("meta")
    with setup:
        inputs = _meta_inputs(info, batch, h, w)
    extrapolate: dict[tuple, int] = {}  # chunk shape → chunks left out of the traced plan
    traced = plan
    if replay == "compressed" and by_module_depth == 0 and plan is not None and getattr(plan, "steps", None):
        traced, extrapolate = _compress(plan)

    def count(p: Any) -> tuple[int, int, int, dict[str, int]]:
        tally = _AttentionTally()
        shim = FusedSDPA() if fused_attention else contextlib.nullcontext()
        counter = FlopCounterMode(display=False, depth=None, custom_mapping=_custom_mapping())
        with torch.device("meta"), torch.no_grad(), counter, shim, tally:  # tally sees SDPA before the shim
            _forward_fn(model, inputs, p, mask)()
        by_module = {mod: sum(ops.values()) // 2 for mod, ops in counter.get_flop_counts().items()
                     if mod != "Global"} if by_module_depth > 0 else {}
        return counter.get_total_flops() // 2 + (tally.macs if fused_attention else 0), tally.macs, tally.calls, \
            by_module

    macs, attn, calls, by_module = count(traced)
    if extrapolate:
        base = count(dataclasses.replace(plan, steps=[]))
        for shape, n in extrapolate.items():
            one = count(dataclasses.replace(plan, steps=[next(st for st in plan.steps if tuple(st[1].shape) == shape)]))
            macs, attn, calls = (v + n * (o - b) for v, o, b in zip((macs, attn, calls), one[:3], base[:3]))
    extra = int(model.extra_sr_macs(h, w, batch)) if hasattr(model, "extra_sr_macs") else 0
    result = MacCount(
        model=info.name, height=h, width=w, batch=batch, macs=macs,
        attention_macs=attn, attention_calls=calls, num_steps=info.num_steps, extra_sr_macs=extra,
        active_windows=None if plan is None else plan.n_selected,
        total_windows=None if plan is None else plan.n_windows, by_module=by_module,
    )
    if estimate_memory:
        live, shim = LiveTensorBytes("meta"), FusedSDPA()
        with torch.device("meta"), torch.no_grad(), shim, live:
            out = _forward_fn(model, inputs, traced, mask)()
            del out
        result.memory = estimate_result(live.peak, baseline_bytes + setup.live, "fused", shim)
    return result


def _compress(plan: Any) -> tuple[Any, dict[tuple, int]]:
    """The plan with every run of consecutive equal-shape chunks cut to its first two, and per shape the number of
    chunks cut (see :func:`count_model_macs`)."""
    kept, cut, run = [], {}, 0
    for k, step in enumerate(plan.steps):
        shape = tuple(step[1].shape)
        run = run + 1 if k and tuple(plan.steps[k - 1][1].shape) == shape else 1
        if run <= 2:
            kept.append(step)
        else:
            cut[shape] = cut.get(shape, 0) + 1
    return (dataclasses.replace(plan, steps=kept), cut) if cut else (plan, {})


def count_module_macs(module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[int, int]:
    """(total MACs, attention MACs) of ``module(*args, **kwargs)`` on whatever device its tensors are (tests, users)."""
    tally = _AttentionTally()
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with torch.no_grad(), counter, tally:
        module(*args, **kwargs)
    return counter.get_total_flops() // 2, tally.macs


def mac_breakdown(name: str, res: int | tuple[int, int], batch: int = 1, mask: torch.Tensor | None = None,
                  depth: int = 2, **overrides: Any) -> list[dict[str, Any]]:
    """Per-module MACs (meta count, any resolution): rows of module, depth, macs and share of the total.

    ``depth`` counts *called* modules from the root (containers such as ModuleList are skipped), so the rows of one
    depth partition their parent's work.
    """
    mc = count_macs(name, res, batch, mask=mask, by_module_depth=64, **overrides)
    names = list(mc.by_module)
    rows = []
    for mod in names:
        d = sum(1 for other in names if other != mod and mod.startswith(other + "."))
        if d <= depth and mc.by_module[mod]:
            rows.append({"module": mod, "depth": d, "macs": mc.by_module[mod],
                         "share": mc.by_module[mod] / mc.macs if mc.macs else 0.0})
    return rows


def _fvcore_sdpa_handle(inputs, outputs) -> int:
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(i) for i in inputs[:3])
    return sdpa_macs(q, k, v)


class _PlannedForward(torch.nn.Module):
    """Wrap a model so that a tracer sees ``compute`` on a fixed plan (both outputs kept alive, as fvcore drops dead
    code; the merge costs no MACs)."""

    def __init__(self, model: torch.nn.Module, plan: Any):
        super().__init__()
        self.model, self.plan = model, plan

    def forward(self, x, t, lq):
        return self.model.compute(x, t, lq, self.plan)


def fvcore_breakdown(name: str, res: int | tuple[int, int], batch: int = 1, mask: torch.Tensor | None = None,
                     max_depth: int = 3, seed: int = 0, **overrides: Any) -> tuple[str, int]:
    """fvcore's per-module table on real CPU tensors, SDPA priced by a handle; returns (table, fvcore total).

    Real tensors only: keep ``res`` small (fvcore traces a real forward; global attention at large sizes is
    infeasible on a CPU).  fvcore also prices norms and upsampling, so its total is slightly above :func:`count_macs`.
    """
    import logging

    from qdm_bench.errors import require

    require("fvcore", "--breakdown-tool fvcore")
    from fvcore.nn import FlopCountAnalysis, flop_count_table

    h, w = _as_hw(res)
    info = resolve(name)
    info.check_resolution(h, w)
    torch.manual_seed(seed)
    model = create_model(name, **overrides).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, info.in_channels, h, w, generator=g)
    lq = torch.randn(batch, info.lq_channels, h, w, generator=g)
    t = torch.zeros(batch, dtype=torch.long)
    if hasattr(model, "plan") and hasattr(model, "forward_planned"):
        model = _PlannedForward(model, model.plan(mask, batch, h, w))
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with torch.no_grad():
        analysis = FlopCountAnalysis(model, (x, t, lq))
        analysis.set_op_handle("aten::scaled_dot_product_attention", _fvcore_sdpa_handle)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        table = flop_count_table(analysis, max_depth=max_depth)
        total = int(analysis.total())
    return table, total


def model_cost_extras(model: torch.nn.Module, height: int, width: int, batch: int, macs: int,
                      notes: list[str]) -> dict[str, Any]:
    """Row fields from a model's analytic ``cost_extras`` (``docs/model-protocol.md``): deployed parameters,
    binary operations, its own notes.

    A model that reports ``bops`` (the MACs of its binarised convolutions) gets ``ops`` = (counted MACs − bops) +
    bops/64, the binary-network convention; ``params_deploy`` is copied; the model's ``notes`` are added to the
    row's notes.  Everything the model reports is kept in ``cost_extra``.
    """
    fn = getattr(model, "cost_extras", None)
    if fn is None:
        return {}
    extra = dict(fn(height, width, batch))
    notes += list(extra.pop("notes", ()))
    out: dict[str, Any] = {"cost_extra": extra}
    if "params_deploy" in extra:
        out["params_deploy"] = extra["params_deploy"]
    if extra.get("bops"):
        bops = int(extra["bops"])
        out.update(bops=bops, ops=(macs - bops) + bops / 64)
    return out


class MacsPlugin:
    """MACs of one network evaluation (attention included) and of a whole super-resolution, plus model cost extras."""

    name = "macs"
    columns = {
        "macs": "MACs of one network evaluation of the whole batch (convolutions and matmuls, attention QKᵀ and AV "
                "included; FLOPs = 2 x MACs)",
        "attention_macs": "the attention products' share of macs",
        "macs_per_sr": "MACs of one super-resolution: num_steps evaluations plus pre/post stages (x ensemble size)",
        "bops": "binary operations (MACs of binarised convolutions; binary networks only)",
        "ops": "(macs - bops) + bops/64, the binary-network convention",
        "params_deploy": "deployed parameters (binary weights / 32 + full-precision ones; binary networks)",
        "cost_extra": "everything the model's cost_extras reported (analytic costs, e.g. DCT/DWT MACs)",
    }

    def measure(self, ctx: Any, row: dict[str, Any]) -> None:
        """Count on the meta device (one pass, shared with a memory estimate) and add the model's cost extras."""
        mc = ctx.count()
        i = ctx.cell.input
        row.update(macs=mc.macs, attention_macs=mc.attention_macs, macs_per_sr=mc.macs_per_sr)
        row.update(model_cost_extras(ctx.meta_model, i.height, i.width, i.batch, mc.macs, ctx.notes))


PLUGIN = MacsPlugin()
