"""The results file (JSON lines, resumable) and the cell runner: rows, resuming, failures as rows, subprocess isolation,
real and estimated memory, QDM window bookkeeping.  Oracles are independent counts (parameters summed from a freshly
built model, window grids from the sizes), never numbers copied from the implementation."""
import json
import math

import pytest
import torch

import qdm_bench.measure.core as cells_mod
from qdm_bench.measure.cell import Cell
from qdm_bench.measure.core import measure_in_process
from qdm_bench.measure.runner import run_cells
from qdm_bench.registry import create_model
from qdm_bench.measure.results import (
    COLUMNS,
    FINISHED,
    ResultsError,
    append_result,
    empty_row,
    finished_keys,
    read_results,
)

CHEAP = ("params", "macs")


# -- the results file --------------------------------------------------------------------------------------------

def test_round_trip_and_schema(tmp_path):
    path = tmp_path / "sub" / "results.jsonl"  # the folder is created
    rows = [empty_row(key="a", model="dit-s/8", params=10, status="ok"),
            empty_row(key="b", model="qdm-t", macs=123, latency_median_ms=1.5, status="oom", message="CUDA oom")]
    for r in rows:
        append_result(path, r)
    back = read_results(path)
    assert back == rows
    for r in back:
        assert list(r) == COLUMNS
    assert read_results([path, path]) == rows + rows  # several files concatenate


def test_empty_row_has_every_column_and_rejects_unknown_ones():
    row = empty_row(model="x")
    assert set(row) == set(COLUMNS) and row["model"] == "x"
    assert all(v is None for k, v in row.items() if k != "model")
    with pytest.raises(KeyError, match="no_such_column"):
        empty_row(no_such_column=1)


def test_non_finite_floats_become_null(tmp_path):
    path = tmp_path / "r.jsonl"
    append_result(path, empty_row(key="a", latency_median_ms=math.nan, throughput_img_s=math.inf,
                                  windows_per_s=-math.inf, macs=5, status="ok"))
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)  # strict JSON
    (row,) = read_results(path)
    assert row["latency_median_ms"] is None and row["throughput_img_s"] is None and row["windows_per_s"] is None
    assert row["macs"] == 5


def test_truncated_last_line_is_ignored(tmp_path):
    path = tmp_path / "r.jsonl"
    append_result(path, empty_row(key="a", status="ok"))
    full = json.dumps(empty_row(key="b", status="ok"))
    with open(path, "a") as f:  # a write killed half way
        f.write(full[: len(full) // 2])
    assert [r["key"] for r in read_results(path)] == ["a"]
    assert finished_keys(path) == {"a"}


def test_append_after_a_killed_write_keeps_the_file_readable(tmp_path):
    path = tmp_path / "r.jsonl"
    append_result(path, empty_row(key="a", status="ok"))
    full = json.dumps(empty_row(key="b", status="ok"))
    with open(path, "a") as f:
        f.write(full[:40])
    append_result(path, empty_row(key="c", status="ok"))  # the resumed run appends
    append_result(path, empty_row(key="d", status="ok"))
    assert [r["key"] for r in read_results(path)] == ["a", "c", "d"]


def test_append_after_an_unterminated_whole_row_keeps_it(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(empty_row(key="a", status="ok")))  # hand-written, no final newline
    append_result(path, empty_row(key="b", status="ok"))
    assert [r["key"] for r in read_results(path)] == ["a", "b"]


def test_corrupt_middle_line_names_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    append_result(path, empty_row(key="a", status="ok"))
    with open(path, "a") as f:
        f.write("this is not json\n")
    append_result(path, empty_row(key="c", status="ok"))
    with pytest.raises(ResultsError, match=r"line 2"):
        read_results(path)
    path.write_text(json.dumps(empty_row(key="a")) + "\n[1, 2]\n" + json.dumps(empty_row(key="c")) + "\n")
    with pytest.raises(ResultsError, match=r"line 2"):  # valid JSON but not a row
        read_results(path)


def test_missing_file_and_folder_are_clear_errors(tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        read_results(tmp_path / "nope.jsonl")
    with pytest.raises(ResultsError, match="folder"):
        read_results(tmp_path)
    assert finished_keys(tmp_path / "nope.jsonl") == set()


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n" + json.dumps(empty_row(key="a")) + "\n\n")
    assert [r["key"] for r in read_results(path)] == ["a"]


def test_finished_keys_counts_ok_and_oom_not_error(tmp_path):
    path = tmp_path / "r.jsonl"
    for key, status in (("ok", "ok"), ("oom", "oom"), ("err", "error"), ("none", None)):
        append_result(path, empty_row(key=key, status=status))
    assert finished_keys(path) == {"ok", "oom"}
    assert FINISHED == {"ok", "oom"}


# -- one cell in process -----------------------------------------------------------------------------------------

def _learnable(name: str, **overrides) -> int:
    with torch.device("meta"):
        model = create_model(name, **overrides)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_params_and_macs_cell():
    row = measure_in_process(Cell.create(model="dit-s/8", height=32, width=32, metrics=CHEAP))
    assert row["status"] == "ok", row["message"]
    assert set(row) == set(COLUMNS)
    assert row["params"] == _learnable("dit-s/8")
    assert row["macs"] > 0 and row["attention_macs"] > 0
    # DiT-S: 12 blocks of global self-attention over (32/8)² = 16 tokens, hidden 384:
    # per block QKᵀ + AV = n²·hidden + n²·hidden MACs (summed over heads)
    n, hidden, depth = (32 // 8) ** 2, 384, 12
    assert row["attention_macs"] == depth * 2 * n * n * hidden
    assert row["macs"] > row["attention_macs"]
    assert row["macs_per_sr"] == row["num_steps"] * row["macs"]
    assert row["model"] == "dit-s/8" and row["height"] == row["width"] == 32 and row["batch"] == 1
    assert row["peak_mem_bytes"] is None and row["latency_median_ms"] is None  # not asked for
    assert row["torch_version"] == torch.__version__ and row["elapsed_s"] >= 0
    assert row["key"] == Cell.create(model="dit-s/8", height=32, width=32, metrics=CHEAP).key


def test_bad_resolution_is_an_error_row():
    row = measure_in_process(Cell.create(model="dit-s/8", height=36, width=36, metrics=CHEAP))
    assert row["status"] == "error"
    assert "multiple" in row["message"] and "36x36" in row["message"]
    assert set(row) == set(COLUMNS) and row["model"] == "dit-s/8"


def test_unknown_model_is_an_error_row():
    row = measure_in_process(Cell.create(model="no-such-model", height=32, width=32, metrics=CHEAP))
    assert row["status"] == "error"
    assert "unknown model" in row["message"] and "no-such-model" in row["message"]
    assert row["family"] is None


def test_bad_dtype_and_metric_are_error_rows():
    row = measure_in_process(Cell.create(model="dit-s/8", height=32, width=32, dtype="int4", metrics=CHEAP))
    assert row["status"] == "error" and "dtype" in row["message"]
    row = measure_in_process(Cell.create(model="dit-s/8", height=32, width=32, metrics=("flops",)))
    assert row["status"] == "error" and "metrics" in row["message"]


def test_memory_and_speed_cell_on_cpu():
    cell = Cell.create(model="dit-s/8", height=32, width=32, metrics=("memory", "speed"), warmup=1, reps=3, max_time_s=2)
    row = measure_in_process(cell)
    assert row["status"] == "ok", row["message"]
    assert row["peak_mem_bytes"] is not None
    assert row["mem_estimated"] is False and row["mem_method"].startswith("cpu-")
    assert row["latency_median_ms"] > 0
    assert row["latency_n"] >= 3
    assert row["latency_p10_ms"] <= row["latency_median_ms"] <= row["latency_p90_ms"]
    assert row["throughput_img_s"] == pytest.approx(1000.0 / row["latency_median_ms"])


def test_cell_above_cpu_max_res_is_estimated_and_not_timed():
    cell = Cell.create(model="dit-s/8", height=32, width=32, metrics=("memory", "speed"), cpu_max_res=16)
    row = measure_in_process(cell)
    assert row["status"] == "ok", row["message"]
    assert row["mem_estimated"] is True
    assert row["mem_method"].startswith("estimated")
    # lower bound: at least the output image of one forward (B·C·H·W float32)
    assert row["peak_mem_bytes"] >= 1 * 3 * 32 * 32 * 4
    assert row["latency_median_ms"] is None and row["latency_n"] is None
    assert "speed not measured" in row["message"] and "cpu-max-res" in row["message"]


# -- QDM cells ---------------------------------------------------------------------------------------------------

QDM_TOTAL_WINDOWS = (64 // (2 * 8)) ** 2  # 64×64 input, downstream patch 2, window 8 → a 4×4 window grid


def test_qdm_cell_records_windows_and_sparse_macs():
    sparse = measure_in_process(Cell.create(model="qdm-t", height=64, width=64, density=0.5, metrics=CHEAP))
    dense = measure_in_process(Cell.create(model="qdm-t", height=64, width=64, metrics=CHEAP))
    assert sparse["status"] == dense["status"] == "ok", (sparse["message"], dense["message"])
    assert sparse["params"] == dense["params"] == _learnable("qdm-t")
    assert sparse["total_windows"] == dense["total_windows"] == QDM_TOTAL_WINDOWS
    assert sparse["active_windows"] == round(0.5 * QDM_TOTAL_WINDOWS)
    assert dense["active_windows"] == QDM_TOTAL_WINDOWS
    assert sparse["window_density"] == pytest.approx(0.5) and dense["window_density"] == 1.0
    assert sparse["patch_density"] == pytest.approx(0.5)  # whole windows are selected
    assert sparse["window"] == 8 and sparse["density"] == 0.5
    assert 0 < sparse["macs"] < dense["macs"]
    assert 0 < sparse["attention_macs"] < dense["attention_macs"]


def test_qdm_macs_are_affine_in_selected_windows():
    macs = {}
    for d in (0.25, 0.5, None):
        row = measure_in_process(Cell.create(model="qdm-t", height=64, width=64, density=d, metrics=("macs",)))
        assert row["status"] == "ok", row["message"]
        macs[row["active_windows"]] = row["macs"]
    assert sorted(macs) == [4, 8, 16]
    per_window = (macs[8] - macs[4]) / 4
    assert per_window > 0
    assert macs[16] - macs[8] == pytest.approx(8 * per_window)


@pytest.mark.parametrize("density", [None, 0.5])
def test_qdm_estimated_memory_cell(density):
    # above cpu_max_res the window plan is computed on the real mask, only the compute runs on meta
    row = measure_in_process(Cell.create(model="qdm-t", height=64, width=64, density=density, metrics=("memory", "speed"),
                                  cpu_max_res=32))
    assert row["status"] == "ok", row["message"]
    assert row["mem_estimated"] is True and row["mem_method"].startswith("estimated")
    assert row["peak_mem_bytes"] >= 1 * 3 * 64 * 64 * 4  # at least the output image
    assert row["latency_median_ms"] is None and "speed not measured" in row["message"]
    assert row["total_windows"] == QDM_TOTAL_WINDOWS


def test_qdm_estimate_shrinks_with_density():
    rows = [measure_in_process(Cell.create(model="qdm-t", height=64, width=64, density=d, metrics=("memory",),
                                    cpu_max_res=32)) for d in (0.25, None)]
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["peak_mem_bytes"] < rows[1]["peak_mem_bytes"]


# -- failures become rows ----------------------------------------------------------------------------------------

OOM_MSG = "CUDA out of memory. Tried to allocate 2.00 GiB"


def _oom() -> BaseException:
    try:
        return torch.OutOfMemoryError(OOM_MSG)
    except Exception:  # noqa: BLE001
        return RuntimeError(OOM_MSG)


def _fake_ok(cell, progress=None):
    return empty_row(key=cell.key, model=cell.model.name, height=cell.input.height, width=cell.input.width, status="ok")


def test_simulated_oom_becomes_an_oom_row(monkeypatch):
    def boom(cell, progress=None):
        raise _oom()

    monkeypatch.setattr(cells_mod, "measure_cell", boom)
    row = measure_in_process(Cell.create(model="dit-s/8", height=32, width=32, metrics=CHEAP))
    assert row["status"] == "oom"
    assert OOM_MSG in row["message"]
    assert set(row) == set(COLUMNS) and row["model"] == "dit-s/8" and row["family"] == "dit"


def test_run_cells_writes_oom_and_goes_on(monkeypatch, tmp_path):
    out = tmp_path / "r.jsonl"
    big, small = (Cell.create(model="dit-s/8", height=s, width=s, metrics=CHEAP) for s in (64, 32))

    def fake(cell, progress=None):
        if cell == big:
            raise _oom()
        return _fake_ok(cell)

    monkeypatch.setattr(cells_mod, "measure_cell", fake)
    report = run_cells([big, small], out, isolate=False)
    assert [r["status"] for r in report.measured] == ["oom", "ok"]
    assert [(r["key"], r["status"]) for r in read_results(out)] == [(big.key, "oom"), (small.key, "ok")]
    again = run_cells([big, small], out, isolate=False)  # an oom row is a finished result
    assert again.skipped == 2 and again.measured == []


def test_error_row_is_retried_on_the_next_run(monkeypatch, tmp_path):
    out = tmp_path / "r.jsonl"
    cell = Cell.create(model="dit-s/8", height=32, width=32, metrics=CHEAP)

    def broken(cell, progress=None):
        raise ZeroDivisionError("something broke")

    monkeypatch.setattr(cells_mod, "measure_cell", broken)
    first = run_cells([cell], out, isolate=False)
    assert first.measured[0]["status"] == "error"
    assert "ZeroDivisionError" in first.measured[0]["message"] and "something broke" in first.measured[0]["message"]
    assert finished_keys(out) == set()
    monkeypatch.setattr(cells_mod, "measure_cell", _fake_ok)
    second = run_cells([cell], out, isolate=False)
    assert second.skipped == 0 and [r["status"] for r in second.measured] == ["ok"]
    assert [r["status"] for r in read_results(out)] == ["error", "ok"]
    assert finished_keys(out) == {cell.key}


# -- resuming ----------------------------------------------------------------------------------------------------

def test_run_cells_resumes(tmp_path):
    out = tmp_path / "r.jsonl"
    a = Cell.create(model="dit-s/8", height=32, width=32, metrics=CHEAP)
    b = Cell.create(model="dit-s/8", height=64, width=32, metrics=CHEAP)
    c = Cell.create(model="dit-s/8", height=32, width=32, batch=2, metrics=CHEAP)
    seen = []
    first = run_cells([a, b], out, isolate=False, on_done=lambda cell, row: seen.append((cell, row["status"])))
    assert [r["status"] for r in first.measured] == ["ok", "ok"] and first.skipped == 0
    assert seen == [(a, "ok"), (b, "ok")]
    assert len(read_results(out)) == 2

    second = run_cells([a, b], out, isolate=False)
    assert second.skipped == 2 and second.measured == []
    assert len(read_results(out)) == 2

    third = run_cells([a, b, c], out, isolate=False)
    assert third.skipped == 2 and [r["key"] for r in third.measured] == [c.key]
    rows = read_results(out)
    assert [r["key"] for r in rows] == [a.key, b.key, c.key]
    assert rows[2]["batch"] == 2 and rows[2]["macs"] == 2 * rows[0]["macs"]  # MACs are linear in the batch


def test_cell_key_identifies_every_parameter():
    a = Cell.create(model="dit-s/8", height=32, width=32, metrics=("params", "macs"))
    assert a.key == Cell.create(model="dit-s/8", height=32, width=32, metrics=("macs", "params")).key  # metric order
    assert a.key != Cell.create(model="dit-s/8", height=32, width=32, metrics=("params",)).key
    assert a.key != Cell.create(model="dit-s/8", height=32, width=32, metrics=CHEAP, dtype="bf16").key
    assert a.key != Cell.create(model="dit-s/8", height=32, width=32, metrics=CHEAP, seed=1).key


def test_run_cells_in_a_subprocess(tmp_path):
    out = tmp_path / "r.jsonl"
    cell = Cell.create(model="dit-s/8", height=32, width=32, metrics=("params",))
    report = run_cells([cell], out, isolate=True, timeout=300)
    (row,) = report.measured
    assert row["status"] == "ok", row["message"]
    assert row["key"] == cell.key
    assert row["params"] == _learnable("dit-s/8")
    assert read_results(out) == [row]
    assert run_cells([cell], out, isolate=True).skipped == 1
