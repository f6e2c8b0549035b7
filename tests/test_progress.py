"""Progress a log can read, fast start, and interrupts of training that lose nothing."""
import os
import signal
import subprocess
import sys

import pytest
import torch

QDM_BENCH = [sys.executable, "-c", "import sys; from qdm_bench.cli.main import main; sys.exit(main())"]


@pytest.mark.parametrize("args", [["--help"], ["macs", "--help"], ["ablate", "threshold", "--help"],
                                  ["train", "--help"], ["pgs", "--help"]])
def test_help_does_not_import_torch(args):
    code = ("import sys\nfrom qdm_bench.cli.main import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)") % (args,)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "False"


def test_a_sweep_logged_to_a_file_shows_start_phase_and_end_lines(tmp_path):
    log = tmp_path / "err.log"
    env = dict(os.environ, QDM_BENCH_PHASE_AFTER="0")  # a line for every phase, however short
    with open(log, "w") as err:
        p = subprocess.run(QDM_BENCH + ["run", "-m", "dit-s/8,qdm-t", "--res", "32", "--reps", "3", "--warmup", "1",
                                        "--max-time", "2", "-o", str(tmp_path / "r.jsonl")],
                           stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=tmp_path)
    assert p.returncode == 0, log.read_text()
    text = log.read_text()
    for label in ("dit-s/8 32x32 b1 fp32", "qdm-t 32x32 b1 fp32"):
        lines = [line for line in text.splitlines() if label in line]
        assert any("start" in line for line in lines), text
        assert any(f"{label}: build" in line for line in lines) and any("timing" in line for line in lines), text
        assert any("done" in line and ": ok in " in line for line in lines), text
    assert "ETA" in text


def _train_args(run_dir, steps=60):
    return ["train", "-m", "qdm-t", "--images", "phantoms", "--image-size", "64", "--holdout", "1", "--crop", "32",
            "--batch", "2", "--steps", str(steps), "--threads", "1", "--ckpt-every", "1000", "--log-every", "1",
            "--run-dir", str(run_dir)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_train_resumes_to_the_same_final_weights(tmp_path, sig):
    """SIGTERM (Slurm, timeout) or SIGINT after a few steps writes a checkpoint of the last step; --resume-ing
    (re-running the command) then ends with exactly the weights of an uninterrupted run."""
    p = subprocess.Popen(QDM_BENCH + _train_args(tmp_path / "cut"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    seen = []
    for line in p.stderr:  # wait until training is under way, then interrupt it
        seen.append(line)
        if "step 5/" in line:
            p.send_signal(sig)
            break
    rest = p.stderr.read()
    assert p.wait(timeout=60) == 128 + sig, "".join(seen) + rest
    assert "interrupted by" in rest and "re-run the same command to resume" in rest
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert 5 <= cut["step"] < 60
    again = subprocess.run(QDM_BENCH + _train_args(tmp_path / "cut"), capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    whole = subprocess.run(QDM_BENCH + _train_args(tmp_path / "whole"), capture_output=True, text=True,
                           cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    a = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 60
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in b["state_dict"])
    assert a["losses"] == b["losses"]
