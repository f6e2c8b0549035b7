"""Nothing we load executes code: a checkpoint whose pickle carries a payload is refused with one clear line by every
command that reads checkpoints, and the payload never runs."""
import os

import pytest
import torch
from click.testing import CliRunner

from qdm_bench.cli.main import main


class Payload:
    """Unpickling this object would run ``os.system(...)``: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.pt"
    torch.save({"format": "qdm-bench-checkpoint-v1", "model": "qdm-t", "overrides": {}, "state_dict": {},
                "config": Payload(marker)}, path)
    return path, marker


@pytest.mark.parametrize("command", [
    ["quality", "--ckpt", "{ckpt}"],
    ["pgs", "--ckpt", "{ckpt}", "--image-size", "64"],
    ["ablate", "threshold", "-m", "qdm-t", "--ckpt", "{ckpt}", "--image-size", "64", "--limit", "1"],
])
def test_a_checkpoint_with_a_payload_is_refused_and_never_runs(evil, tmp_path, command):
    ckpt, marker = evil
    args = [a.format(ckpt=ckpt) for a in command] + ["-o", str(tmp_path / "r.jsonl")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and str(ckpt) in r.output and "never executed" in r.output
    assert not marker.exists()
    results = tmp_path / "r.jsonl"
    assert not results.exists() or results.read_text() == ""  # no row was written


def test_train_resume_refuses_a_payload_in_its_run_folder(evil, tmp_path):
    ckpt, marker = evil
    run = tmp_path / "run"
    run.mkdir()
    os.replace(ckpt, run / "last.pt")
    r = CliRunner().invoke(main, ["train", "-m", "qdm-t", "--steps", "1", "--run-dir", str(run)])
    assert r.exit_code != 0 and "never executed" in r.output and "Traceback" not in r.output
    assert not marker.exists()


def test_create_model_checkpoint_path_loads_weights_only(evil, tmp_path):
    from qdm_bench import create_model
    from qdm_bench.registry import ModelError

    ckpt, marker = evil
    with pytest.raises(ModelError, match="never executed"):
        create_model("qdm-t", checkpoint_path=str(ckpt))
    assert not marker.exists()
    good = tmp_path / "good.pt"
    torch.manual_seed(1)
    src = create_model("qdm-t")
    torch.save({"state_dict": src.state_dict()}, good)
    loaded = create_model("qdm-t", checkpoint_path=str(good))
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), loaded.state_dict().values()))
