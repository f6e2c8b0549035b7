"""Regression tracking: `qdm-bench compare` flags injected regressions and passes identical runs."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner

from qdm_bench.cli.main import main
from qdm_bench.compare import Tolerances, compare_rows
from qdm_bench.measure.results import append_result, empty_row

NET = '''
import time
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(6, 8, 3, padding=1)
        {extra_init}
        self.b = torch.nn.Conv2d(8, 3, 3, padding=1)
    def forward(self, x_t, t, lq, mask=None):
        h = self.a(torch.cat([x_t, lq], 1))
        {extra_forward}
        return self.b(h)

def net():
    return Net()
'''


def _write_net(folder, extra_layer=False, sleep=0.0):
    extra_init = "self.extra = torch.nn.Conv2d(8, 8, 3, padding=1)" if extra_layer else "pass"
    extra_forward = "h = self.extra(h)" if extra_layer else ""
    if sleep:
        extra_forward += f"\n        time.sleep({sleep})"
    (folder / "reg_net.py").write_text(textwrap.dedent(NET).replace("{extra_init}", extra_init)
                                       .replace("{extra_forward}", extra_forward))


def _cli(folder, *args):
    env = dict(os.environ, PYTHONPATH=str(folder) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "qdm_bench.cli.main", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


SPEED = ("speed", "-m", "reg_net:net", "--res", "16", "--device", "cpu", "--warmup", "2", "--reps", "5",
         "--max-time", "2", "--isolate", "never")


def test_extra_layer_fails_compare_and_identical_passes(tmp_path):
    _write_net(tmp_path)
    base, new, same = tmp_path / "base.jsonl", tmp_path / "new.jsonl", tmp_path / "same.jsonl"
    assert _cli(tmp_path, "macs", "-m", "reg_net:net", "--res", "16", "-o", base).returncode == 0
    assert _cli(tmp_path, "macs", "-m", "reg_net:net", "--res", "16", "-o", same).returncode == 0
    ok = _cli(tmp_path, "compare", base, same)
    assert ok.returncode == 0, ok.stderr
    _write_net(tmp_path, extra_layer=True)
    assert _cli(tmp_path, "macs", "-m", "reg_net:net", "--res", "16", "-o", new).returncode == 0
    bad = _cli(tmp_path, "compare", base, new)
    assert bad.returncode == 1
    assert "params" in bad.stdout and "macs" in bad.stdout and "regression" in bad.stdout
    assert bad.stderr.strip().splitlines()[-1].startswith("Error:") and "Traceback" not in bad.stderr


def test_slowed_forward_fails_compare(tmp_path):
    _write_net(tmp_path)
    base, new = tmp_path / "base.jsonl", tmp_path / "new.jsonl"
    assert _cli(tmp_path, *SPEED, "-o", base).returncode == 0
    _write_net(tmp_path, sleep=0.05)  # 50 ms per forward against well under 1 ms
    assert _cli(tmp_path, *SPEED, "-o", new).returncode == 0
    bad = _cli(tmp_path, "compare", base, new)
    assert bad.returncode == 1 and "median latency ms" in bad.stdout
    assert "macs" not in [line.split()[-4] for line in bad.stdout.splitlines() if "regression" in line]


def _row(model="qdm-s", **kw):
    base = dict(key=f"{model}-{kw}", model=model, height=128, width=128, batch=1, dtype="fp32", device="cpu",
                compile=False, status="ok", params=10, macs=100, device_name="cpu-x", threads=1)
    base.update(kw)
    return empty_row(**base)


def test_compare_rows_rules():
    base = [_row(), _row(density=0.25, macs=40, latency_median_ms=30.0), _row(latency_median_ms=100.0),
            _row("dit-s/8", peak_mem_bytes=1000, mem_estimated=True)]
    assert not any(f.failed for f in compare_rows(base, base))
    # absolute times within the generous factor 2, but the in-run sparse/dense ratio grows from 0.30 to 0.50
    slower = [_row(), _row(density=0.25, macs=40, latency_median_ms=55.0), _row(latency_median_ms=110.0),
              _row("dit-s/8", peak_mem_bytes=1000, mem_estimated=True)]
    failed = [f.metric for f in compare_rows(base, slower) if f.failed]
    assert failed == ["sparse/dense latency"]
    # a deterministic estimate that changes is a regression; a missing cell too, unless allowed
    changed = base[:3] + [_row("dit-s/8", peak_mem_bytes=1200, mem_estimated=True)]
    assert [f.metric for f in compare_rows(base, changed) if f.failed] == ["peak memory (estimated)"]
    assert [f.verdict for f in compare_rows(base, base[:3]) if f.failed] == ["missing"]
    assert not any(f.failed for f in compare_rows(base, base[:3], allow_missing=True))
    # other device: absolute latency is not compared
    other = [dict(r, device_name="gpu-y") for r in base]
    assert {f.verdict for f in compare_rows(base, other) if f.metric == "median latency ms"} == {"skipped"}
    # ok -> oom is a regression
    oom = [base[0], dict(base[1], status="oom", message="out of memory")] + base[2:]
    assert [f.metric for f in compare_rows(base, oom) if f.failed] == ["status"]


@pytest.mark.parametrize("drop,failed", [(0.05, False), (0.2, True)])
def test_quality_tolerance(drop, failed):
    base = [dict(_row(), psnr=30.0)]
    new = [dict(_row(), psnr=30.0 - drop)]
    assert any(f.failed for f in compare_rows(base, new, Tolerances(psnr_db=0.1))) is failed


def test_compare_bad_files_are_one_line(tmp_path):
    good = tmp_path / "g.jsonl"
    append_result(good, _row())
    result = CliRunner().invoke(main, ["compare", str(good), str(tmp_path / "missing.jsonl")])
    assert result.exit_code != 0 and result.output.strip().splitlines()[-1].startswith("Error:")
    assert "does not exist" in result.output


@pytest.mark.parametrize("device, base_mib, new_mib, failed", [
    ("cpu", 24, 53, False),  # RSS growth of a small cell: within the CPU slack
    ("cpu", 200, 600, True),  # a real growth on CPU
    ("cuda", 24, 53, True),  # allocator statistics on CUDA are exact: no slack
])
def test_measured_memory_tolerance_with_cpu_slack(device, base_mib, new_mib, failed):
    def row(mib):
        return empty_row(key="k", model="m", height=64, width=64, batch=1, dtype="fp32", device=device,
                         device_name="X", threads=1, status="ok", peak_mem_bytes=mib * 2**20, mem_estimated=False)

    findings = compare_rows([row(base_mib)], [row(new_mib)])
    assert any(f.failed for f in findings) is failed


def test_compare_refuses_empty_truncated_and_corrupt_files_and_bad_tolerances(tmp_path):
    from click.testing import CliRunner

    from qdm_bench.cli.main import main

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"key": "k", "model": "m", "height": 8, "width": 8, "batch": 1, "status": "ok",
                                "macs": 10}) + "\n")
    empty, cut, typed = tmp_path / "empty.jsonl", tmp_path / "cut.jsonl", tmp_path / "typed.jsonl"
    empty.write_text("")
    cut.write_text(good.read_text() + '{"key": "k2", "mod')
    typed.write_text(good.read_text().replace('"macs": 10', '"macs": "ten"'))

    def run(*args):
        r = CliRunner().invoke(main, ["compare", *map(str, args)])
        assert r.exit_code != 0 and "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
        return r.output

    assert "no rows" in run(empty, good)
    assert "cut short" in run(cut, good) and "line 2" in run(cut, good)
    out = run(typed, good)
    assert "line 1" in out and "'macs'" in out and "'ten'" in out
    for tol in ("nan", "inf", "-1"):
        assert "--time-tol" in run(good, good, "--time-tol", tol)
    ok = CliRunner().invoke(main, ["compare", str(good), str(good)])
    assert ok.exit_code == 0, ok.output
