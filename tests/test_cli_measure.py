"""The measurement commands: tables, results files, resuming, and one-line errors for bad input."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from qdm_bench.cli.main import main
from qdm_bench.measure.macs import count_macs
from qdm_bench.measure.results import read_results


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result, *needles):
    assert result.exit_code != 0
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("Error:"), result.output
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[-1], lines[-1]


@pytest.mark.parametrize("command", ["params", "macs", "memory", "speed", "run"])
def test_every_command_has_help_with_examples(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Examples:" in result.output and "--models" in result.output


def test_macs_writes_exact_rows_and_a_table(tmp_path):
    out = tmp_path / "r.jsonl"
    result = invoke("macs", "-m", "dit-s/8,unet", "--res", "64", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "dit-s/8" in result.output and "unet" in result.output and "GMACs" in result.output
    rows = {r["model"]: r for r in read_results(out)}
    assert rows["dit-s/8"]["macs"] == count_macs("dit-s/8", 64).macs
    assert rows["unet"]["status"] == "ok" and rows["unet"]["attention_macs"] > 0


def test_rerun_resumes_without_remeasuring(tmp_path):
    out = tmp_path / "r.jsonl"
    invoke("macs", "-m", "dit-s/8", "--res", "32", "--res", "64", "-o", str(out))
    n = len(read_results(out))
    result = invoke("macs", "-m", "dit-s/8", "--res", "32", "--res", "64", "--res", "128", "-o", str(out))
    assert result.exit_code == 0
    assert "(cached)" in result.output and "already finished" in result.output
    rows = read_results(out)
    assert n == 2 and len(rows) == 3 and rows[-1]["height"] == 128


def test_threshold_and_density_cells_for_qdm_only(tmp_path):
    out = tmp_path / "r.jsonl"
    result = invoke("macs", "-m", "qdm-t,dit-s/8", "--res", "64", "-s", "0.1", "-d", "0.5", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert sorted(r["model"] for r in rows) == ["dit-s/8", "qdm-t", "qdm-t"]
    by_density = {r["density"]: r for r in rows if r["model"] == "qdm-t"}
    assert by_density[0.5]["active_windows"] == 8 and by_density[0.5]["total_windows"] == 16


def test_memory_at_1024_on_cpu_is_an_estimate_with_an_explanation(tmp_path):
    out = tmp_path / "r.jsonl"
    result = invoke("memory", "-m", "dit-s/8", "--res", "1024", "--device", "cpu", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "(est.)" in result.output and "lower bound" in result.output
    (row,) = read_results(out)
    assert row["mem_estimated"] is True and row["mem_method"].startswith("estimated")
    assert row["peak_mem_bytes"] > 0 and row["macs"] == count_macs("dit-s/8", 1024).macs


def test_speed_above_cpu_max_res_is_skipped_with_a_reason(tmp_path):
    out = tmp_path / "r.jsonl"
    result = invoke("speed", "-m", "dit-s/8", "--res", "512", "--device", "cpu", "-o", str(out))
    assert result.exit_code == 0, result.output
    (row,) = read_results(out)
    assert row["status"] == "ok" and row["latency_median_ms"] is None and "cpu-max-res" in row["message"]


def test_unknown_model_is_one_line_with_close_matches(tmp_path):
    result = invoke("macs", "-m", "dit-s/9", "--res", "64", "-o", str(tmp_path / "r.jsonl"))
    assert_one_line_error(result, "unknown model", "dit-s/8")


def test_bad_resolution_is_refused_before_any_cell(tmp_path):
    out = tmp_path / "r.jsonl"
    result = invoke("run", "-m", "dit-s/8,swin-unet", "--res", "96", "-o", str(out))
    assert_one_line_error(result, "swin-unet", "64")
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["--threshold", "-0.5"], "threshold"), (["--density", "1.5"], "density"), (["--res", "12x"], "resolution"),
    (["--batch", "0"], "batch"), (["--dtype", "fp16", "--device", "cpu"], "fp16"),
])
def test_bad_values_are_one_line_errors(tmp_path, args, needle):
    result = invoke("macs", "-m", "qdm-t", "--res", "64", "-o", str(tmp_path / "r.jsonl"), *args)
    assert_one_line_error(result, needle)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_requested_but_absent(tmp_path):
    result = invoke("memory", "-m", "dit-s/8", "--device", "cuda", "-o", str(tmp_path / "r.jsonl"))
    assert_one_line_error(result, "CUDA", "--device cpu")


def test_corrupt_results_file_is_one_line_error(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"key": "a", "status": "ok"}\nnot json at all\n{"key": "b", "status": "ok"}\n')
    result = invoke("macs", "-m", "dit-s/8", "--res", "32", "-o", str(out))
    assert_one_line_error(result, "line 2")
    assert out.read_text().count("\n") == 3  # nothing was lost or appended


def test_killed_run_resumes_without_redoing_finished_cells(tmp_path):
    """Kill a real `qdm-bench run` after its first cell, re-run it: finished cells are kept and not measured again."""
    out = tmp_path / "r.jsonl"
    args = [sys.executable, "-m", "qdm_bench.cli.main", "run", "-m", "dit-s/8", "--res", "32", "--res", "48",
            "--res", "64", "--device", "cpu", "--warmup", "1", "--reps", "3", "--max-time", "1", "-o", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and (not out.exists() or not out.read_text().strip()):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = read_results(out)
    assert len(first) >= 1 and all(r["status"] == "ok" for r in first)
    done = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    rows = read_results(out)
    keys = [r["key"] for r in rows if r["status"] == "ok"]
    assert len(keys) == len(set(keys)) == 3, "every cell measured exactly once"
    assert rows[: len(first)] == first
    assert all(r["latency_median_ms"] > 0 and not r["mem_estimated"] for r in rows)
    assert json.loads(Path(out).read_text().splitlines()[0])["key"] == first[0]["key"]


def test_user_model_from_a_module_is_listed_and_measured(tmp_path, monkeypatch):
    import textwrap

    from qdm_bench import registry

    (tmp_path / "user_nets.py").write_text(textwrap.dedent('''
        import torch
        import torch.nn.functional as F

        class Net(torch.nn.Module):
            """A conv and one attention, ignoring t and the mask."""
            def __init__(self, ch=8):
                super().__init__()
                self.inp = torch.nn.Conv2d(6, ch, 3, padding=1)
                self.out = torch.nn.Conv2d(ch, 3, 3, padding=1)
            def forward(self, x_t, t, lq, mask=None):
                h = self.inp(torch.cat([x_t, lq], 1))
                b, c, H, W = h.shape
                q = h.flatten(2).transpose(1, 2)[:, None]
                h = h + F.scaled_dot_product_attention(q, q, q)[:, 0].transpose(1, 2).reshape(b, c, H, W)
                return self.out(h)

        def net(**kw):
            return Net(**kw)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        listed = invoke("models", "--model", "user_nets:net")
        assert listed.exit_code == 0 and "user_nets:net" in listed.output
        out = tmp_path / "r.jsonl"
        result = invoke("macs", "-m", "user_nets:net", "--res", "16", "-o", str(out))
        assert result.exit_code == 0, result.output
        (row,) = read_results(out)
        n = 16 * 16
        assert row["attention_macs"] == n * n * 16
        assert row["macs"] == n * 9 * 6 * 8 + n * n * 16 + n * 9 * 8 * 3
    finally:
        registry._REGISTRY.pop("user_nets:net", None)
        sys.modules.pop("user_nets", None)


@pytest.mark.parametrize("res,tool,needle", [("32", "auto", "fvcore"), ("1024", "auto", "exact meta-device count")])
def test_macs_breakdown_tables(tmp_path, res, tool, needle):
    result = invoke("macs", "-m", "dit-s/8", "--res", res, "--breakdown", "--breakdown-tool", tool,
                    "-o", str(tmp_path / "r.jsonl"))
    assert result.exit_code == 0, result.output
    assert needle in result.output and "blocks" in result.output
