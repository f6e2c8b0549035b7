"""--executor slurm --device cuda submits from a machine without a GPU: the device is resolved in the job."""
import pytest
import torch
from click.testing import CliRunner

from qdm_bench.cli.execute import _cell_kwargs
from qdm_bench.cli.main import main
from qdm_bench.errors import ConfigError
from qdm_bench.measure.cell import Cell
from qdm_bench.measure.runner import measure_cell_dict

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without CUDA")


def test_a_local_run_refuses_cuda_without_a_gpu_but_a_slurm_submission_keeps_it_for_the_job():
    with pytest.raises(ConfigError, match="no CUDA device"):
        _cell_kwargs("cuda", None, 256, False, 1, 1, 1.0)
    for device in ("cuda", "auto"):
        assert _cell_kwargs(device, None, 256, False, 1, 1, 1.0, executor="slurm")["device"] == "cuda"
    assert _cell_kwargs("cpu", None, 256, False, 1, 1, 1.0, executor="slurm")["device"] == "cpu"


def test_the_cli_gets_past_device_resolution_on_a_login_node(tmp_path):
    res = CliRunner().invoke(main, ["params", "-m", "qdm-s", "--res", "64", "--device", "cuda", "--executor", "slurm",
                                    "-o", str(tmp_path / "r.jsonl")])
    assert "CUDA was requested" not in res.output  # refused only for what this machine lacks: submitit, if missing
    assert res.exit_code == 0 or "submitit" in res.output


def test_a_cuda_job_on_a_node_without_a_gpu_is_an_error_row_naming_the_fix():
    cell = Cell.create("qdm-s", 64, 64, metrics=("params",), device="cuda")
    row = measure_cell_dict(cell.flat())
    assert row["status"] == "error" and "no CUDA device in this job" in row["message"]
    assert "--slurm-partition" in row["message"]
