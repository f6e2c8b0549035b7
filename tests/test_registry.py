"""The model registry: names, wildcards, user models, entry points, example inputs, errors."""
import sys
import textwrap

import pytest
import torch

from qdm_bench import create_model, example_inputs, list_models, model_info
from qdm_bench import registry
from qdm_bench.registry import ModelError


def test_names_and_wildcards():
    names = list_models()
    for n in ("qdm-s", "qdm-b", "qdm-l", "dit-s/2", "dit-xl/8"):
        assert n in names
    assert list_models("dit-*/8") == ["dit-s/8", "dit-b/8", "dit-l/8", "dit-xl/8"]
    assert set(list_models(["qdm-s", "dit-s/2"])) == {"qdm-s", "dit-s/2"}


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ModelError, match=r"unknown model 'qdm-x'.*did you mean.*qdm-"):
        create_model("qdm-x")
    with pytest.raises(ModelError, match="qdm-bench models"):
        create_model("completely-different")


def test_overrides_reach_the_factory():
    with torch.device("meta"):
        m = create_model("qdm-s", window=4)
    assert m.window == 4 and m.qdm_bench_info.default_cfg["window"] == 4


def test_user_module_factory_path(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(textwrap.dedent('''
        import torch
        class Tiny(torch.nn.Module):
            def __init__(self, scale=2.0):
                super().__init__()
                self.w = torch.nn.Parameter(torch.tensor(scale))
            def forward(self, x_t, t, lq, mask=None):
                return self.w * x_t
        def tiny(**kw):
            """A user model."""
            return Tiny(**kw)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        info = model_info("my_models:tiny")
        assert info.family == "user" and "my_models:tiny" in list_models()
        m = create_model("my_models:tiny", scale=3.0)
        x = torch.ones(1, 3, 16, 16)
        assert torch.equal(m(x, torch.zeros(1), x), 3 * x)
        with pytest.raises(ModelError, match="no callable"):
            model_info("my_models:missing")
    finally:
        registry._REGISTRY.pop("my_models:tiny", None)
        sys.modules.pop("my_models", None)


def test_entry_point_plugins_are_registered(monkeypatch):
    class EP:
        name, group = "plugin-net", registry.ENTRY_POINT_GROUP

        @staticmethod
        def load():
            return lambda **kw: torch.nn.Identity()

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group=None: [EP] if group == EP.group else [])
    try:
        assert "plugin-net" in list_models()
        assert isinstance(create_model("plugin-net"), torch.nn.Identity)
    finally:
        registry._REGISTRY.pop("plugin-net", None)


def test_example_inputs_validate_resolution_and_build_masks():
    with pytest.raises(ModelError, match="multiples of 16"):
        example_inputs("qdm-s", 100)
    ex = example_inputs("qdm-s", (64, 96), batch=2, density=0.5)
    assert ex["x_t"].shape == (2, 3, 64, 96) and ex["mask"].shape == (2, 32, 48)
    windows = ex["mask"].reshape(2, 4, 8, 6, 8).amax((2, 4))
    assert torch.all(windows.mean((1, 2)) == 0.5)
    assert example_inputs("dit-s/8", 64)["mask"] is None


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_a_forward_on_cpu(name):
    """Smallest valid size ≥ 16 (Swin: 64), batch 2; output has x_t's shape and dtype; a mask is accepted."""
    info = model_info(name)
    torch.manual_seed(0)
    model = create_model(name).eval()
    res = max(16, getattr(model, "input_multiple", info.multiple))
    ex = example_inputs(name, res, batch=2, density=0.5 if info.uses_mask else None)
    mask = ex["mask"] if info.uses_mask else torch.ones(2, res // 2, res // 2, dtype=torch.bool)
    with torch.no_grad():
        out = model(ex["x_t"], ex["t"], ex["lq"], mask=mask)
    assert out.shape == (2, info.out_channels, res, res) and out.dtype == ex["x_t"].dtype
    assert torch.isfinite(out).all()
