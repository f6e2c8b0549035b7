"""Bad input, tried as a hostile but fair user would: every case is refused before any cell runs, with one line
that names the option or file, a non-zero exit, no traceback, and nothing already measured lost."""
import json

import pytest
import torch
from click.testing import CliRunner

from qdm_bench.cli.main import main

EXISTING = {"key": "measured-before", "model": "dit-s/8", "height": 32, "width": 32, "batch": 1, "status": "ok",
            "macs": 1}


@pytest.fixture
def results(tmp_path):
    """A results file that already holds one measured row (which no refused command may touch)."""
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(EXISTING) + "\n")
    return path


def refused(args, names, results=None):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code != 0, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert any(n in r.output for n in names), r.output
    if results is not None:
        assert results.read_text() == json.dumps(EXISTING) + "\n"
    return r.output


@pytest.mark.parametrize("args, names", [
    (["macs", "-m", "qdm-s", "--res", "128", "--window", "0"], ["--window"]),
    (["macs", "-m", "qdm-s", "--res", "128", "--patch", "0"], ["--patch"]),
    (["macs", "-m", "dit-s/8", "--res", "64", "--patch", "-8"], ["--patch"]),
    (["macs", "-m", "qdm-s", "--res", "128", "--chunk-size", "0"], ["--chunk-size"]),
    (["speed", "-m", "dit-s/8", "--res", "32", "--reps", "0"], ["--reps"]),
    (["speed", "-m", "dit-s/8", "--res", "32", "--reps", "-5"], ["--reps"]),
    (["speed", "-m", "dit-s/8", "--res", "32", "--warmup", "-1"], ["--warmup"]),
    (["speed", "-m", "dit-s/8", "--res", "32", "--max-time", "-1"], ["--max-time"]),
    (["speed", "-m", "dit-s/8", "--res", "32", "--timeout", "0"], ["--timeout"]),
    (["run", "-m", "dit-s/8", "--res", "32", "--cpu-max-res", "-1"], ["--cpu-max-res"]),
    (["macs", "-m", "dit-s/8", "--res", "32", "-b", "0"], ["--batch"]),
    (["speed", "-m", "qdm-s", "--res", "1000000"], ["--res"]),
    (["macs", "-m", "qdm-t", "--res", "64", "-b", "1000000"], ["--batch"]),
    (["macs", "-m", "os:getcwd", "--res", "64"], ["os:getcwd"]),
    (["macs", "-m", "qdm-x", "--res", "64"], ["qdm-x"]),
    (["macs", "-m", "qdm-s", "--res", "100"], ["100x100"]),
    (["ablate", "threshold", "-m", "qdm-t", "--image-size", "0"], ["--image-size"]),
    (["ablate", "threshold", "-m", "qdm-t", "--scale", "0"], ["--scale"]),
    (["ablate", "window", "-m", "qdm-t", "--windows", "0"], ["--windows"]),
    (["ablate", "threshold", "-m", "dit-s/8"], ["dit-s/8"]),
])
def test_measurement_options_are_refused_before_any_cell(args, names, results):
    refused(args + ["-o", results], names, results)


def test_a_corrupt_image_file_is_refused_naming_it(tmp_path, results):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    refused(["macs", "-m", "qdm-s", "--res", "128", "-s", "0.1", "--image", bad, "-o", results], [str(bad)], results)


def test_params_at_a_huge_size_allocate_nothing(tmp_path):
    out = tmp_path / "p.jsonl"
    r = CliRunner().invoke(main, ["params", "-m", "qdm-s,dit-s/8,unet", "--res", "1000000", "-o", str(out)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok"] * 3 and rows[0]["params"] == 49200588


def test_an_unwritable_results_file_fails_before_measuring():
    for args in (["macs", "-m", "dit-s/8", "--res", "32"], ["pgs", "-m", "qdm-t", "--image-size", "64"]):
        out = refused(args + ["-o", "/proc/qdm-bench/x.jsonl"], ["/proc/qdm-bench/x.jsonl"])
        assert "writable" in out


def test_model_listing_refuses_a_non_model_factory():
    refused(["models", "-m", "os:getcwd"], ["os:getcwd"])


@pytest.fixture
def other_weights(tmp_path):
    """A qdm-bench checkpoint whose weights are of another network (dit-s/8's) under the name qdm-t."""
    from qdm_bench import create_model

    net = create_model("dit-s/8", depth=1)
    path = tmp_path / "other.pt"
    torch.save({"format": "qdm-bench-checkpoint-v1", "model": "qdm-t", "overrides": {},
                "state_dict": net.state_dict(), "config": {"crop": 64, "image_size": 128, "scale": 4,
                                                          "images": "phantoms"}, "held_out": ["shepp_logan"]}, path)
    return path


def test_quality_options_and_other_weights_are_refused(other_weights, tmp_path, results):
    refused(["quality", "--ckpt", other_weights, "--images", "phantoms", "-o", results], ["does not fit"], results)
    refused(["ablate", "threshold", "-m", "qdm-t", "--ckpt", other_weights, "--image-size", "128", "-o", results],
            ["does not fit"], results)
    refused(["quality", "--ckpt", other_weights, "--scale", "0", "-o", results], ["--scale"], results)
    refused(["quality", "--ckpt", other_weights, "--image-size", "0", "-o", results], ["--image-size"], results)


def test_a_tile_that_does_not_divide_the_image_is_refused(tmp_path, results):
    from qdm_bench import create_model

    torch.manual_seed(0)
    net = create_model("qdm-t")
    ckpt = tmp_path / "t.pt"
    torch.save({"format": "qdm-bench-checkpoint-v1", "model": "qdm-t", "overrides": {},
                "state_dict": net.state_dict(), "config": {"crop": 64, "image_size": 128, "scale": 4},
                "held_out": []}, ckpt)
    refused(["quality", "--ckpt", ckpt, "--images", "phantoms", "--limit", "1", "--tile", "7", "-o", results],
            ["--tile"], results)


@pytest.mark.parametrize("args, names", [
    (["train", "--holdout", "-1", "--steps", "1"], ["--holdout"]),
    (["train", "--threads", "0", "--steps", "1"], ["--threads"]),
    (["train", "--scale", "0", "--steps", "1"], ["--scale"]),
    (["train", "--steps", "0"], ["--steps"]),
])
def test_training_options_are_refused(args, names, tmp_path):
    refused(args + ["--run-dir", tmp_path / "run"], names)
    assert not (tmp_path / "run" / "last.pt").exists()
