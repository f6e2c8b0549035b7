"""Achieved throughput next to the limit (issue 17): the cached matmul peak, and the speed rows' TFLOP/s columns.

The oracle of ``achieved_tflops`` is the closed form 2 · macs / latency from the row's own columns; no timing is
asserted beyond positivity and finiteness."""
import math

import pytest
import torch
from click.testing import CliRunner

import qdm_bench.measure.throughput as tp
from qdm_bench.cli.main import main
from qdm_bench.measure.cell import Cell
from qdm_bench.measure.core import measure_in_process
from qdm_bench.measure.results import read_results


@pytest.fixture
def counted(monkeypatch):
    """A fresh peak cache and a count of the timed matmul calls."""
    tp.clear_cache()
    calls = []
    real = tp._time_matmul

    def timed(n, dev, dt, reps):
        calls.append((n, str(dev), dt, reps))
        return real(n, dev, dt, reps)

    monkeypatch.setattr(tp, "_time_matmul", timed)
    yield calls
    tp.clear_cache()


def test_peak_is_positive_finite_and_cached(counted, one_thread):
    tflops, n = tp.peak_matmul_tflops("cpu", "fp32", threads=1)
    assert tflops is not None and math.isfinite(tflops) and tflops > 0
    assert n in tp.CPU_N
    measured = len(counted)
    assert measured >= 1 and counted[-1][0] == n
    assert tp.peak_matmul_tflops("cpu", "fp32", threads=1) == (tflops, n)
    assert tp.peak_matmul_tflops("cpu", torch.float32, threads=1) == (tflops, n)  # same key by dtype object
    assert len(counted) == measured  # the second and third calls did not re-measure
    assert torch.get_num_threads() == 1


def test_peak_thread_argument_is_restored(monkeypatch, one_thread):
    tp.clear_cache()
    seen = []

    def fake(n, dev, dt, reps):
        seen.append(torch.get_num_threads())
        return 0.01

    monkeypatch.setattr(tp, "_time_matmul", fake)
    tflops, n = tp.peak_matmul_tflops("cpu", "fp32", threads=2)
    assert seen and set(seen) == {2} and tflops == pytest.approx(2 * n**3 / 0.01 / 1e12)
    assert torch.get_num_threads() == 1
    tp.clear_cache()


def test_failed_dtype_records_none_with_a_note(monkeypatch):
    tp.clear_cache()

    def fail(n, dev, dt, reps):
        raise RuntimeError('"addmm_impl_cpu_" not implemented for \'Half\'\nmore')

    monkeypatch.setattr(tp, "_time_matmul", fail)
    tflops, n, note = tp.peak_with_note("cpu", "fp16", threads=1)
    assert tflops is None and n == tp.CPU_N[0] and "not measured" in note and "\n" not in note
    tp.clear_cache()


def test_achieved_closed_form():
    assert tp.achieved_tflops(1e12, 1000.0) == pytest.approx(2.0)
    assert tp.achieved_tflops(None, 1.0) is None and tp.achieved_tflops(5, 0.0) is None


def _check_row(r):
    assert r["status"] == "ok", r["message"]
    assert r["macs"] > 0 and r["latency_median_ms"] > 0
    expect = 2 * r["macs"] / (r["latency_median_ms"] / 1e3) / 1e12
    assert r["achieved_tflops"] == pytest.approx(expect, rel=1e-12)
    assert r["peak_tflops"] > 0 and math.isfinite(r["peak_tflops"]) and r["peak_matmul_n"] in tp.CPU_N
    assert r["peak_share"] == pytest.approx(r["achieved_tflops"] / r["peak_tflops"], rel=1e-12)
    assert r["peak_share"] > 0


def test_speed_cli_writes_throughput_columns(tmp_path, one_thread):
    out = tmp_path / "r.jsonl"
    result = CliRunner().invoke(main, ["speed", "-m", "dit-s/8", "--res", "32", "--reps", "2", "--warmup", "1",
                                       "--isolate", "never", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert rows
    for r in rows:
        _check_row(r)


def test_speed_without_macs_metric_counts_them(one_thread):
    """A speed-only cell still gets achieved_tflops: the shared meta-device count supplies the MACs."""
    row = measure_in_process(Cell.create(model="dit-s/8", height=32, width=32, metrics=("speed",), reps=2,
                                         warmup=1, threads=1))
    assert row["macs"] is None  # the macs plugin did not run
    assert row["status"] == "ok", row["message"]
    macs = measure_in_process(Cell.create(model="dit-s/8", height=32, width=32, metrics=("macs",)))["macs"]
    assert row["achieved_tflops"] == pytest.approx(2 * macs / (row["latency_median_ms"] / 1e3) / 1e12, rel=1e-12)
    assert row["peak_share"] > 0
