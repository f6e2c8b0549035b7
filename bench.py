"""Regression benchmarks (pytest-benchmark): small, stable forward cells of each model family.

Run:  pytest bench.py --benchmark-enable --benchmark-json=bench.json   (1 CPU thread, see below)
Each benchmark carries its parameters, exact MACs and (QDM) window density as ``extra_info``, so a saved run says
what was timed.  Without ``--benchmark-enable`` (the project default) every cell runs once as a smoke test.
"""
import os

import pytest
import torch

from qdm.quadtree import random_window_mask
from qdm_bench.measure.macs import count_macs
from qdm_bench.measure.params import count_parameters
from qdm_bench.registry import create_model, example_inputs

torch.set_num_threads(1)  # docs/measurement.md §4.2: one thread on shared 2-core machines

CELLS = [  # (model, resolution, window density or None for the model's dense / mask-free path)
    ("qdm-t", 64, None),
    ("qdm-t", 64, 0.25),
    ("qdm-t", 64, 0.5),
    ("dit-s/8", 64, None),
    ("unet", 32, None),
    ("swin-unet", 64, None),
    ("bi-diffsr", 32, None),
    ("dualdomain-resshift", 64, None),
]


@pytest.mark.parametrize("name,res,density", CELLS, ids=[f"{m}-{r}-{d}" for m, r, d in CELLS])
def test_forward(benchmark, name, res, density):
    """One no-grad forward at batch 1, fp32."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    if hasattr(model, "prepare_inference"):  # BI-DiffSR: weights binarised once, as deployed
        model.prepare_inference()
    inputs = example_inputs(name, res)
    mask = None
    if density is not None:
        g = torch.Generator().manual_seed(0)
        mask = random_window_mask(1, res // model.down_patch, res // model.down_patch, model.window, density,
                                  generator=g)
    macs = count_macs(name, res, mask=mask)
    benchmark.extra_info.update(params=count_parameters(model)["learnable"], macs=macs.macs, res=res,
                                density=density, active_windows=macs.active_windows, threads=1)

    def forward():
        with torch.inference_mode():
            return model(inputs["x_t"], inputs["t"], inputs["lq"], mask=mask)

    out = benchmark(forward)
    assert out.shape == inputs["x_t"].shape[:1] + (3,) + inputs["x_t"].shape[2:]


FIGURE5 = "qdm-s,qdm-b,qdm-l,dit-s/8,dit-l/8,dit-s/2,unet,swin-unet"


@pytest.mark.parametrize("command", ["macs", "memory"])
def test_figure5_at_1024(benchmark, command, tmp_path):
    """`qdm-bench macs|memory --res 1024` for the 8 Figure-5 models, end to end in a fresh process (import, counting,
    estimating, writing the results file) on the CPU: the wall time the README states comes from here."""
    import subprocess
    import sys

    counter = iter(range(10 ** 6))

    def run():
        out = tmp_path / f"{command}-{next(counter)}.jsonl"
        subprocess.run([sys.executable, "-c", "import sys; from qdm_bench.cli.main import main; sys.exit(main())",
                        command, "--res", "1024", "-m", FIGURE5, "--device", "cpu", "-o", str(out)], check=True,
                       capture_output=True)
        return out

    out = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(command=f"qdm-bench {command} --res 1024", models=FIGURE5,
                                load_average=os.getloadavg()[0])
    assert len(out.read_text().splitlines()) == 8
