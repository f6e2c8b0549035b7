"""Measurement primitives (docs/measurement.md §3, §4): CPU peak memory, the meta-device estimate, timing, autocast,
out-of-memory detection and environment metadata.  Oracles are hand-computed byte counts and known allocations; no
assert depends on how fast anything ran."""
import json
import math
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import torch.nn.functional as F

from qdm_bench.measure.environment import autocast_context, environment_info, is_oom
from qdm_bench.measure.estimate import estimate_peak_memory
from qdm_bench.measure.timing import percentile, time_fn

MiB = 2**20
F32 = 4  # bytes per float32 element


# -- CPU peak memory: a known allocation, measured in a fresh process --------------------------------------------

ALLOC_MIB = 256

_PEAK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    from qdm_bench.measure.memory import peak_memory_cpu

    n = {mib} * 2**20 // 4

    def fn():
        t = torch.ones(n, dtype=torch.float32)  # ones: every page is written, so it is resident
        s = float(t[::4096].sum())
        del t
        return s

    out = {{}}
    for reset in {resets}:
        r = peak_memory_cpu(fn, warmup=1, reset_hwm=reset)
        out[str(reset)] = dict(peak=r.peak_bytes, base=r.baseline_bytes, method=r.method, estimated=r.estimated,
                               first=r.first_call_peak_bytes, notes=r.notes)
    print(json.dumps(out))
""")

# A small parent that touches ``peak`` MiB, frees it, then starts the measuring child.  A child started through
# vfork/posix_spawn (what subprocess does) inherits its parent's ru_maxrss, so without this launcher the child would
# inherit the pytest process's high-water mark; with peak > 0 it inherits a known one on purpose.
_LAUNCHER = textwrap.dedent("""
    import subprocess, sys
    peak = int(sys.argv[1])
    if peak:
        b = bytearray(peak * 2**20)
        b[::4096] = b"x" * len(b[::4096])
        del b
    sys.exit(subprocess.run(sys.argv[2:]).returncode)
""")


def _peak_in_subprocess(resets, parent_peak_mib: int = 0) -> dict:
    code = _PEAK_SCRIPT.format(mib=ALLOC_MIB, resets=tuple(resets))
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(parent_peak_mib), sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _clear_refs_allowed() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _close_to_alloc(nbytes: int) -> bool:
    alloc = ALLOC_MIB * MiB
    return abs(nbytes - alloc) <= 0.05 * alloc + 8 * MiB


def test_peak_memory_cpu_measures_a_known_allocation():
    r = _peak_in_subprocess([True])["True"]
    if r["method"] == "cpu-rss-hwm":
        assert _clear_refs_allowed()
        assert _close_to_alloc(r["first"]), r  # the warm-up call allocates the same tensor
    else:  # containers that refuse clear_refs fall back (and say so)
        assert r["method"] == "cpu-ru_maxrss"
    assert r["estimated"] is False
    assert r["base"] > 0
    assert _close_to_alloc(r["peak"]), r


def test_peak_memory_cpu_ru_maxrss_fallback_covers_the_allocation():
    r = _peak_in_subprocess([False])["False"]
    assert r["method"] == "cpu-ru_maxrss"
    assert r["first"] is None
    assert "WARNING" not in r["notes"]
    # a high-water mark over the calls: at least the allocation (minus what the imports had already peaked above the
    # current RSS, a few MiB at most), and not wildly more
    alloc = ALLOC_MIB * MiB
    assert alloc - 8 * MiB <= r["peak"] <= 1.05 * alloc + 8 * MiB, r


def test_peak_memory_cpu_inherited_high_water_mark():
    # the parent peaked at 768 MiB, above anything the child reaches (imports + 256 MiB)
    if not _clear_refs_allowed():
        pytest.skip("clear_refs not allowed here")
    r = _peak_in_subprocess([True, False], parent_peak_mib=768)
    hwm, fallback = r["True"], r["False"]
    assert hwm["method"] == "cpu-rss-hwm" and _close_to_alloc(hwm["peak"]), hwm  # VmHWM is not inherited
    assert fallback["method"] == "cpu-ru_maxrss"
    assert fallback["base"] >= 768 * MiB
    assert "WARNING" in fallback["notes"] and "inherited" in fallback["notes"]  # it says it cannot be trusted


# -- estimate on the meta device: hand-computed live bytes -------------------------------------------------------

def test_estimate_linear_peak_is_the_output():
    n, d_in, d_out = 64, 1024, 1024

    def forward_factory(model):
        x = torch.empty(n, d_in, device="meta")
        return lambda: model(x)

    r = estimate_peak_memory(lambda: torch.nn.Linear(d_in, d_out), forward_factory)
    assert r.estimated is True
    assert r.method.startswith("estimated")
    assert r.attention == "fused"
    # resident before the forward: weight, bias and input; the forward only adds its output
    assert r.baseline_bytes == (d_in * d_out + d_out + n * d_in) * F32
    assert r.peak_bytes == n * d_out * F32
    assert r.absolute_peak_bytes == r.baseline_bytes + r.peak_bytes


def test_estimate_chain_peak_is_the_largest_pair_of_live_activations():
    n = 64
    def model_factory():
        return torch.nn.Sequential(torch.nn.Linear(1024, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 512))

    def forward_factory(model):
        x = torch.empty(n, 1024, device="meta")
        return lambda: model(x)

    r = estimate_peak_memory(model_factory, forward_factory)
    # Linear1 → h1 (n·2048); ReLU → h2 (n·2048) while h1 is alive; then h1 dies, Linear2 → out (n·512) beside h2
    expected = max(n * 2048, n * 2048 + n * 2048, n * 2048 + n * 512) * F32
    assert r.peak_bytes == expected
    params = (1024 * 2048 + 2048 + 2048 * 512 + 512) * F32
    assert r.baseline_bytes == params + n * 1024 * F32


def test_estimate_is_deterministic_and_runs_nothing_real():
    def build():
        model = torch.nn.Linear(4096, 4096)  # built on meta: no 64 MiB of weights
        x = torch.empty(8, 4096)
        return model, (lambda: model(x))

    a, b = estimate_peak_memory(build), estimate_peak_memory(build)
    assert a.peak_bytes == b.peak_bytes == 8 * 4096 * F32
    assert a.baseline_bytes == b.baseline_bytes


def _sdpa_build(b, h, L, S, d):
    def build():
        q, k, v = torch.empty(b, h, L, d), torch.empty(b, h, S, d), torch.empty(b, h, S, d)
        return None, (lambda: F.scaled_dot_product_attention(q, k, v))

    return build


def test_estimate_attention_math_materialises_scores_fused_does_not():
    b, h, L, S, d = 1, 2, 1024, 1024, 16
    scores = b * h * L * S * F32
    out = b * h * L * d * F32
    lse = b * h * L * F32  # float32 log-sum-exp of a fused kernel
    math_r = estimate_peak_memory(_sdpa_build(b, h, L, S, d), attention="math")
    fused = estimate_peak_memory(_sdpa_build(b, h, L, S, d), attention="fused")
    assert math_r.method.startswith("estimated") and math_r.method.endswith("math")
    assert fused.method.startswith("estimated") and fused.method.endswith("fused")
    assert math_r.attention == "math" and fused.attention == "fused"
    assert math_r.peak_bytes >= scores + out
    assert out <= fused.peak_bytes <= out + lse
    assert fused.peak_bytes < scores
    assert math_r.baseline_bytes == fused.baseline_bytes == (b * h * L * d + 2 * b * h * S * d) * F32


def test_estimate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="attention"):
        estimate_peak_memory(_sdpa_build(1, 1, 8, 8, 4), attention="flash")
    with pytest.raises(TypeError, match=r"\(model, fn\)"):
        estimate_peak_memory(lambda: torch.nn.Linear(2, 2))


def test_mem_tracker_private_api_is_available():
    # estimate_peak_memory depends on this private API of the pinned torch; fail loudly when an upgrade drops it
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    with tracker:
        x = torch.empty(1024, device="meta")
    snap = tracker.get_tracker_snapshot("peak")
    assert snap[torch.device("meta")]["Total"] >= 1024 * F32
    del x


# -- timing ------------------------------------------------------------------------------------------------------

def test_time_fn_keeps_every_sample_and_summarises_them():
    calls = []
    r = time_fn(lambda: calls.append(1), "cpu", warmup=2, reps=7)
    assert len(calls) == 2 + 7
    assert r.n == len(r.samples_ms) == 7
    assert r.warmup == 2 and not r.stopped_early
    assert min(r.samples_ms) == r.min_ms <= r.median_ms <= max(r.samples_ms)
    assert r.p10_ms <= r.median_ms <= r.p90_ms
    assert r.mean_ms == pytest.approx(sum(r.samples_ms) / 7)
    assert r.method == "perf_counter" and r.device == "cpu"
    assert r.threads == torch.get_num_threads()
    assert r.throughput(4) == pytest.approx(4 / (r.median_ms / 1000.0))


def test_time_fn_max_time_stops_early_after_three_reps():
    r = time_fn(lambda: time.sleep(0.02), "cpu", warmup=0, reps=50, max_time=0.03)
    assert r.stopped_early
    assert 3 <= r.n < 50
    assert all(s >= 19.0 for s in r.samples_ms)  # each sample covers its sleep
    assert "max_time" in r.notes


def test_time_fn_min_time_adds_reps():
    r = time_fn(lambda: time.sleep(0.005), "cpu", warmup=0, reps=2, min_time=0.03)
    assert r.n >= 2
    assert sum(r.samples_ms) >= 30.0
    assert not r.stopped_early


@pytest.mark.parametrize("kw", [{"reps": 0}, {"reps": -1}, {"warmup": -1}])
def test_time_fn_bad_arguments(kw):
    with pytest.raises(ValueError):
        time_fn(lambda: None, "cpu", **kw)


def test_percentile_matches_linear_interpolation():
    xs = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 5.0
    assert percentile(xs, 10) == pytest.approx(1.4)  # numpy's default: 1 + 0.4·(2 − 1)
    with pytest.raises(ValueError):
        percentile([], 50)


# -- autocast ----------------------------------------------------------------------------------------------------

def test_autocast_fp32_is_no_autocast():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast_context("cpu", "fp32"):
        assert not torch.is_autocast_enabled("cpu")
        assert (a @ b).dtype == torch.float32


def test_autocast_bf16_on_cpu():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast_context("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32


def test_autocast_refuses_fp16_on_cpu_and_unknown_dtypes():
    with pytest.raises(ValueError, match="bf16"):
        autocast_context("cpu", "fp16")
    with pytest.raises(ValueError, match="unknown dtype"):
        autocast_context("cpu", "int8")


# -- out-of-memory detection -------------------------------------------------------------------------------------

def _torch_oom(msg: str) -> BaseException:
    try:
        return torch.OutOfMemoryError(msg)
    except Exception:  # noqa: BLE001 - a torch whose OOM class cannot be built from Python
        return RuntimeError(msg)


@pytest.mark.parametrize("exc", [
    _torch_oom("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)"),
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)"),
])
def test_is_oom_true(exc):
    assert is_oom(exc)


@pytest.mark.parametrize("exc", [ValueError("out of memory"), RuntimeError("shape mismatch"), KeyError("x")])
def test_is_oom_false(exc):
    assert not is_oom(exc)


# -- environment -------------------------------------------------------------------------------------------------

ENV_KEYS = {
    "torch_version", "cuda_version", "cudnn_version", "device", "device_name", "cpu_model", "gpu", "threads",
    "interop_threads", "cudnn_benchmark", "sdpa_backends", "git_commit", "git_dirty", "python_version", "platform",
    "hostname", "timestamp", "packages_hash", "packages",
}


def test_environment_info_cpu():
    env = environment_info("cpu")
    assert ENV_KEYS <= set(env)
    assert json.loads(json.dumps(env)) == env
    assert env["torch_version"] == torch.__version__
    assert env["device"] == "cpu" and env["gpu"] is None and env["cuda_version"] is None
    assert env["threads"] == torch.get_num_threads()
    assert set(env["sdpa_backends"]) == {"flash", "mem_efficient", "math", "cudnn"}
    assert env["packages"].get("torch") == torch.__version__
    assert "T" in env["timestamp"]
    full = environment_info("cpu", full=True)
    assert isinstance(full["torch_config"], str) and isinstance(full["parallel_info"], str)
    json.dumps(full)


def test_memory_result_is_json_serialisable():
    import dataclasses

    r = estimate_peak_memory(_sdpa_build(1, 1, 16, 16, 8))
    d = json.loads(json.dumps(dataclasses.asdict(r)))
    assert d["peak_bytes"] == r.peak_bytes and d["estimated"] is True
    assert math.isclose(r.peak_mib, r.peak_bytes / MiB)
