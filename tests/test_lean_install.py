"""Lean install (issue 17): the Figure-5 measurement commands run without any optional package, and a command that
needs a missing extra stops with one line naming it.

Each command runs in a fresh interpreter whose ``PYTHONPATH`` starts with a folder holding a ``sitecustomize.py``
that blocks the optional packages (and logs every attempt to import one), so the measurement workers that the CLI
starts see the same block.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BLOCKED = ("skimage", "pydicom", "torch_dct", "ptwt", "fvcore", "submitit", "diffusers", "pyiqa")
FIGURE5 = "qdm-s,qdm-b,qdm-l,dit-s/8,dit-l/8,dit-s/2,unet,swin-unet"
ONE_PER_FAMILY = "qdm-s,dit-s/8,unet,swin-unet"  # every module of the Figure-5 set, the small member of each family

SITECUSTOMIZE = f'''
import os, sys
_BLOCKED = {BLOCKED!r}
class _BlockOptional:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            with open(os.environ["QDM_LEAN_LOG"], "a") as f:
                f.write(name + "\\n")
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the lean-install test)", name=name)
        return None
sys.meta_path.insert(0, _BlockOptional())
'''
MAIN = "import sys; from qdm_bench.cli.main import main; sys.argv[0] = 'qdm-bench'; main()"


@pytest.fixture(scope="module")
def lean(tmp_path_factory):
    """run(*args) -> CompletedProcess of `qdm-bench args` with the optional packages blocked; .log lists attempts."""
    root = tmp_path_factory.mktemp("lean")
    (root / "site").mkdir()
    (root / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = root / "imports.log"
    log.touch()
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, QDM_LEAN_LOG=str(log), QDM_BENCH_DEBUG="",
               PYTHONPATH=os.pathsep.join(p for p in (str(root / "site"), str(repo), os.environ.get("PYTHONPATH"))
                                          if p))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", MAIN, *args], cwd=root, env=env, capture_output=True, text=True,
                              timeout=300)

    run.root, run.log = root, log
    return run


def _ok(proc: subprocess.CompletedProcess, log: Path, probed: str = "") -> None:
    """Exit 0, no traceback, and no attempt to import an optional package but ``probed`` (a guarded probe)."""
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    tried = set(log.read_text().split())
    log.write_text("")
    assert tried <= ({probed} - {""}), f"{proc.args[3:]} tried to import {sorted(tried)}"


def test_block_is_active(lean):
    proc = subprocess.run([sys.executable, "-c", "import skimage"], cwd=lean.root, capture_output=True, text=True,
                          env=dict(os.environ, QDM_LEAN_LOG=str(lean.root / "probe.log"),
                                   PYTHONPATH=str(lean.root / "site")))
    assert proc.returncode != 0 and "blocked by the lean-install test" in proc.stderr


def test_figure5_commands_without_optional_packages(lean):
    out, log = lean.root, lean.log
    _ok(lean("models"), log, probed="diffusers")  # kl-f4 / vq-f4 are listed without counts
    for cmd in ("params", "macs"):
        _ok(lean(cmd, "-m", FIGURE5, "--res", "64", "-o", str(out / f"{cmd}.jsonl")), log)
    _ok(lean("macs", "-m", "dit-s/8", "--res", "32", "--breakdown", "-o", str(out / "breakdown.jsonl")), log,
        probed="fvcore")  # auto falls back to the meta count
    # real tensors: one model per family in this process, one in a fresh worker (the worker sees the block too)
    _ok(lean("memory", "-m", ONE_PER_FAMILY, "--res", "64", "--isolate", "never", "-o", str(out / "memory.jsonl")),
        log)
    _ok(lean("speed", "-m", ONE_PER_FAMILY, "--res", "64", "--reps", "1", "--warmup", "0", "--max-time", "1",
             "--isolate", "never", "-o", str(out / "speed.jsonl")), log)
    _ok(lean("speed", "-m", "dit-s/8", "--res", "64", "--reps", "1", "--warmup", "0", "--max-time", "1",
             "--isolate", "always", "-o", str(out / "speed-worker.jsonl")), log)
    for f in ("params", "macs", "memory", "speed", "speed-worker"):
        assert '"status": "ok"' in (out / f"{f}.jsonl").read_text()
        assert '"status": "error"' not in (out / f"{f}.jsonl").read_text()
    _ok(lean("report", str(out / "macs.jsonl"), str(out / "speed.jsonl"), "--out-dir", str(out / "report")), log)
    _ok(lean("compare", str(out / "macs.jsonl"), str(out / "macs.jsonl")), log)


@pytest.mark.parametrize("args, extra", [
    (("macs", "-m", "dualdomain-resshift", "--res", "64"), "dualdomain"),
    (("macs", "-m", "dit-s/8", "--res", "32", "--breakdown", "--breakdown-tool", "fvcore"), "fvcore"),
    (("params", "-m", "dit-s/8", "--res", "64", "--executor", "slurm"), "slurm"),
    (("ablate", "threshold", "-m", "qdm-t", "--images", "natural", "--limit", "1", "--image-size", "64"), "images"),
    (("ablate", "threshold", "-m", "qdm-t", "--images", "ct", "--limit", "1", "--image-size", "64"), "images"),
], ids=["dualdomain", "fvcore", "slurm", "natural-images", "dicom-images"])
def test_missing_extra_is_one_line(lean, args, extra, tmp_path):
    proc = lean(*args, "-o", str(tmp_path / "out.jsonl"))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "internal error" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, proc.stderr
    assert f"pip install 'qdm-bench[{extra}]'" in errors[0]
