"""Ablation sweeps: window / patch / resolution cells, local executor with --jobs, bad inputs."""
import pytest
from click.testing import CliRunner

from qdm_bench.cli.main import main
from qdm_bench.measure.macs import count_macs
from qdm_bench.measure.results import read_results


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_window_ablation_rows(tmp_path):
    out = tmp_path / "w.jsonl"
    result = invoke("ablate", "window", "-m", "qdm-t", "--res", "64", "--windows", "4,8,16", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = {r["window"]: r for r in read_results(out)}
    assert sorted(rows) == [4, 8, 16]
    assert len({r["params"] for r in rows.values()}) == 1  # the window changes no parameter
    for w, r in rows.items():
        assert r["total_windows"] == (64 // (2 * w)) ** 2
        assert r["macs"] == count_macs("qdm-t", 64, window=w).macs


def test_patch_ablation_rows(tmp_path):
    out = tmp_path / "p.jsonl"
    result = invoke("ablate", "patch", "-m", "qdm-t", "--res", "64", "--patches", "4,8", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = {r["patch"]: r for r in read_results(out)}
    assert sorted(rows) == [4, 8]
    assert rows[4]["macs"] > rows[8]["macs"]  # four times the upstream tokens
    assert rows[4]["macs"] == count_macs("qdm-t", 64, up_patch=4).macs


def test_res_ablation_rows(tmp_path):
    out = tmp_path / "r.jsonl"
    result = invoke("ablate", "res", "-m", "dit-s/8,unet", "--res", "64,128", "--no-memory", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert sorted((r["model"], r["height"]) for r in rows) == [("dit-s/8", 64), ("dit-s/8", 128), ("unet", 64),
                                                               ("unet", 128)]
    assert all(r["peak_mem_bytes"] is None for r in rows)


def test_local_executor_runs_cells_in_parallel_processes(tmp_path):
    out = tmp_path / "j.jsonl"
    result = invoke("ablate", "res", "-m", "dit-s/8", "--res", "32,48", "--speed", "--no-memory", "--jobs", "2",
                    "--device", "cpu", "--warmup", "1", "--reps", "3", "--max-time", "1", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = read_results(out)
    assert sorted(r["height"] for r in rows) == [32, 48]
    assert all(r["status"] == "ok" and r["latency_n"] >= 3 for r in rows)
    again = invoke("ablate", "res", "-m", "dit-s/8", "--res", "32,48", "--speed", "--no-memory", "--jobs", "2",
                   "--device", "cpu", "--warmup", "1", "--reps", "3", "--max-time", "1", "-o", str(out))
    assert again.exit_code == 0 and len(read_results(out)) == 2


@pytest.mark.parametrize("args,needle", [
    (["window", "-m", "dit-s/8"], "quadtree mask"),
    (["window", "-m", "qdm-t", "--windows", "4,x"], "integers"),
    (["patch", "-m", "qdm-t", "--res", "72"], "multiples of"),
    (["res", "-m", "dit-s/8", "--res", "64", "--jobs", "0"], "jobs"),
])
def test_bad_ablation_input_is_one_line(tmp_path, args, needle):
    result = invoke("ablate", *args, "-o", str(tmp_path / "x.jsonl"))
    assert result.exit_code != 0
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error") and needle in last and "Traceback" not in result.output


def test_slurm_executor_without_submitit_is_a_clear_error(tmp_path):
    try:
        import submitit  # noqa: F401
        pytest.skip("submitit is installed")
    except ImportError:
        pass
    result = invoke("ablate", "res", "-m", "dit-s/8", "--res", "64", "--executor", "slurm", "-o",
                    str(tmp_path / "s.jsonl"))
    assert result.exit_code != 0 and "pip install 'qdm-bench[slurm]'" in result.output.strip().splitlines()[-1]


def test_submitit_executor_gathers_rows(tmp_path):
    """The Slurm path through submitit's in-process 'debug' cluster (skipped where submitit is not installed)."""
    pytest.importorskip("submitit")
    from qdm_bench.measure.cell import Cell
    from qdm_bench.measure.runner import run_cells

    cells = [Cell.create(model="dit-s/8", height=h, width=h, metrics=("params", "macs")) for h in (32, 64)]
    out = tmp_path / "s.jsonl"
    report = run_cells(cells, out, executor="slurm", slurm={"cluster": "debug", "folder": str(tmp_path / "%j")})
    assert [r["macs"] for r in report.rows] == [count_macs("dit-s/8", h).macs for h in (32, 64)]
    assert run_cells(cells, out, executor="slurm", slurm={"cluster": "debug"}).skipped == 2
