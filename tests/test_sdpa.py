"""The attention kernels a forward runs are seen and recorded per timed row (flash / memory-efficient / math)."""
import json

import pytest
import torch
from click.testing import CliRunner
from torch.nn.attention import SDPBackend, sdpa_kernel

from qdm_bench.cli.main import main
from qdm_bench.measure.sdpa import sdpa_kernels
from qdm_bench.registry import create_model, example_inputs


def _forward(name, res=32):
    model = create_model(name).eval()
    ex = example_inputs(name, res)
    return lambda: model(ex["x_t"], ex["t"], ex["lq"])


def _count(text):
    return sum(int(part.split("×")[1]) for part in text.split(", "))


def test_every_attention_call_of_qdm_is_seen_once():
    with torch.no_grad():
        _, seen = sdpa_kernels(_forward("qdm-t"))
    # qdm-t: 2 upstream blocks (self-attention) + 2 downstream blocks (window self- and cross-attention), one chunk
    assert _count(seen) == 2 + 2 * 2


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode, torch.enable_grad])
def test_the_recorded_kernel_is_the_one_the_profiler_sees(mode):
    from torch.profiler import profile

    fn = _forward("qdm-t")
    with mode():
        _, seen = sdpa_kernels(fn)
        with profile() as prof:
            fn()
    fused = [e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product_flash_attention")]
    assert seen == f"flash×{len(fused)}" and len(fused) == 6


def test_forcing_the_math_backend_is_recorded_as_math():
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        _, seen = sdpa_kernels(_forward("qdm-t"))
    assert seen == "math×6"


def test_a_model_without_attention_has_none():
    pytest.importorskip("torch_dct")
    with torch.no_grad():
        _, seen = sdpa_kernels(_forward("dualdomain-resshift", 64))
    assert seen is None


def test_timed_rows_record_the_kernels(tmp_path):
    out = tmp_path / "r.jsonl"
    res = CliRunner().invoke(main, ["speed", "-m", "qdm-t", "--res", "32", "--reps", "2", "--warmup", "1",
                                    "--isolate", "never", "-o", str(out)])
    assert res.exit_code == 0, res.output
    row = json.loads(out.read_text().splitlines()[0])
    assert _count(row["sdpa_kernels"]) == 6
