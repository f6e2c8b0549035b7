"""The authors' LDM first-stage autoencoders (KL-f4 medical, VQ-f4 real-world) loaded through diffusers reproduce the
reference outputs of ``ldm/models/autoencoder.py`` (tests/fixtures/reference) in float64."""
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from qdm.first_stage import (FIRST_STAGE_CONFIGS, FirstStage, config_from_ddconfig,  # noqa: E402
                             config_from_state_dict, convert_ldm_state_dict, load_first_stage)

REF = Path(__file__).parent / "fixtures" / "reference"
CKPT = {"kl": REF / "vae_kl_tiny.ckpt", "vq": REF / "vq_f4_tiny.pth"}
IO = {"kl": REF / "vae_kl_tiny.io.pt", "vq": REF / "vq_f4_tiny.io.pt"}
TOL = 1e-10


def io(kind):
    return torch.load(IO[kind], weights_only=True)


def fixture_config(kind):
    c = io(kind)["config"]
    return config_from_ddconfig(kind, c["ddconfig"], c["embed_dim"], c.get("n_embed"))


@pytest.fixture(scope="module")
def stages():
    return {kind: load_first_stage(str(CKPT[kind])).double() for kind in ("kl", "vq")}


def maxdiff(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype == torch.float64
    return (a - b).abs().max().item()


@torch.no_grad()
def test_kl_reproduces_the_reference(stages):
    st, ref = stages["kl"], io("kl")
    x, out = ref["inputs"]["image"], ref["outputs"]
    assert maxdiff(st.moments(x), out["moments"]) <= TOL
    assert maxdiff(st.encode(x), out["z_mode"]) <= TOL
    assert maxdiff(st.decode(out["z_mode"]), out["decoded"]) <= TOL
    assert maxdiff(st(x), out["decoded"]) <= TOL  # forward = decode(encode(x)), mode
    assert st.downsample_factor == 4 and st.encode(x).shape[-1] == x.shape[-1] // 4


@torch.no_grad()
def test_kl_sample_is_mean_plus_std_times_the_generators_noise(stages):
    st, x = stages["kl"], io("kl")["inputs"]["image"]
    m = st.moments(x)
    mean, logvar = m.chunk(2, dim=1)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = st.encode(x, sample=True, generator=torch.Generator().manual_seed(5))
    assert maxdiff(z, mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps) <= TOL


@torch.no_grad()
def test_vq_reproduces_the_reference(stages):
    st, ref = stages["vq"], io("vq")
    x, out = ref["inputs"]["image"], ref["outputs"]
    assert maxdiff(st.encode(x), out["encoded"]) <= TOL
    assert maxdiff(st.decode(out["encoded"]), out["decoded"]) <= TOL
    assert maxdiff(st.decode(out["encoded"], quantize=False), out["decoded_unquantised"]) <= TOL
    with pytest.raises(ValueError, match="kl"):
        st.moments(x)


@torch.no_grad()
def test_encoder_and_decoder_views_split_the_model(stages):
    for kind, st in stages.items():
        x = io(kind)["inputs"]["image"]
        enc, dec = st.encoder_module(), st.decoder_module()
        n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        assert n(enc) + n(dec) == n(st)
        assert maxdiff(dec(enc(x)), st(x)) == 0.0


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_config_inferred_from_the_weights_is_the_fixture_config(kind):
    inferred = config_from_state_dict(torch.load(CKPT[kind], weights_only=True))
    # the resolution is not in the weights: without attention it changes nothing
    assert inferred == replace(fixture_config(kind), resolution=inferred.resolution)
    assert kind == inferred.kind


def test_a_ddp_prefixed_checkpoint_with_training_only_keys_loads(stages, tmp_path):
    state = torch.load(CKPT["kl"], weights_only=True)["state_dict"]
    prefixed = {f"module.{k}": v for k, v in state.items()}
    prefixed["module.loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)
    prefixed["loss.logvar"] = torch.zeros(())
    path = tmp_path / "ddp.ckpt"
    torch.save({"state_dict": prefixed}, path)
    st = load_first_stage(str(path), kind="kl", config=fixture_config("kl")).double()
    x = io("kl")["inputs"]["image"]
    with torch.no_grad():
        assert maxdiff(st.moments(x), stages["kl"].moments(x)) == 0.0


def one_line(err):
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("given", [False, True])
def test_a_tensor_of_the_wrong_shape_is_named(tmp_path, given):
    state = torch.load(CKPT["vq"], weights_only=True)
    state["decoder.up.1.block.0.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        load_first_stage(str(path), config=fixture_config("vq") if given else None)
    msg = one_line(err)
    assert str(path) in msg and "decoder.up.1.block.0.conv2.weight" in msg
    assert "(64, 64, 1, 1)" in msg and "(64, 64, 3, 3)" in msg


def test_unknown_and_missing_keys_are_named(tmp_path):
    state = torch.load(CKPT["vq"], weights_only=True)
    with pytest.raises(ValueError) as err:
        convert_ldm_state_dict({**state, "ema.decay": torch.zeros(())}, fixture_config("vq"))
    assert "ema.decay" in one_line(err)
    del state["encoder.mid.attn_1.proj_out.bias"]
    with pytest.raises(ValueError) as err:
        convert_ldm_state_dict(state, fixture_config("vq"))
    assert "encoder.mid.attn_1.proj_out.bias" in one_line(err) and "missing" in str(err.value)
    kl = torch.load(CKPT["kl"], weights_only=True)
    with pytest.raises(ValueError) as err:  # a KL checkpoint under a VQ config
        convert_ldm_state_dict(kl, fixture_config("vq"))
    one_line(err)


class Payload:
    """Unpickling this object would run ``os.system(...)``: it creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_with_a_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.ckpt"
    state = torch.load(CKPT["kl"], weights_only=True)
    torch.save({**state, "hyper_parameters": Payload(marker)}, path)
    with pytest.raises(ValueError) as err:
        load_first_stage(str(path))
    assert str(path) in one_line(err) and "never executed" in str(err.value)
    assert not marker.exists()


def test_without_diffusers_one_line_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError) as err:
        FirstStage(FIRST_STAGE_CONFIGS["kl-f4-medical"])
    assert str(err.value) == "the first-stage autoencoders need diffusers: pip install 'qdm-bench[latent]'"


# ---- parameter counts derived by hand from the LDM architecture -------------------------------------------------

def conv(cin, cout, k):
    return cin * cout * k * k + cout


def norm(c):
    return 2 * c


def resblock(cin, cout):
    return norm(cin) + conv(cin, cout, 3) + norm(cout) + conv(cout, cout, 3) + (conv(cin, cout, 1) if cin != cout else 0)


def attn(c):
    return norm(c) + 4 * conv(c, c, 1)  # q, k, v, proj_out


def ldm_params(kind, embed_dim, z, ch, ch_mult, nrb, n_embed=None, cin=3, cout=3):
    """Encoder + decoder + quant convs (+ codebook) of the LDM autoencoder, with no attention resolutions."""
    chs = [ch * m for m in ch_mult]
    top = chs[-1]
    mid = 2 * resblock(top, top) + attn(top)
    enc, c = conv(cin, ch, 3), ch
    for i, co in enumerate(chs):
        for _ in range(nrb):
            enc, c = enc + resblock(c, co), co
        enc += conv(co, co, 3) if i < len(chs) - 1 else 0
    enc += mid + norm(top) + conv(top, 2 * z if kind == "kl" else z, 3)
    dec, c = conv(z, top, 3) + mid, top
    for i in reversed(range(len(chs))):
        for _ in range(nrb + 1):
            dec, c = dec + resblock(c, chs[i]), chs[i]
        dec += conv(c, c, 3) if i > 0 else 0
    dec += norm(ch) + conv(ch, cout, 3)
    quant = conv(2 * z, 2 * embed_dim, 1) if kind == "kl" else conv(z, embed_dim, 1) + n_embed * embed_dim
    return enc + dec + quant + conv(embed_dim, z, 1)


def test_the_hand_count_matches_the_authors_files():
    assert sum(v.numel() for v in torch.load(CKPT["kl"], weights_only=True)["state_dict"].values()) == \
        ldm_params("kl", 3, 3, 32, (1, 2, 4), 1)
    assert sum(v.numel() for v in torch.load(CKPT["vq"], weights_only=True).values()) == \
        ldm_params("vq", 3, 3, 32, (1, 2, 4), 1, n_embed=64)


@pytest.mark.parametrize("name, kind, n_embed", [("kl-f4-medical", "kl", None), ("vq-f4-realworld", "vq", 8192)])
def test_shipped_configs_build_on_meta_with_the_hand_counted_parameters(name, kind, n_embed):
    cfg = FIRST_STAGE_CONFIGS[name]
    with torch.device("meta"):
        st = FirstStage(cfg)
    assert st.kind == kind and st.downsample_factor == 4
    assert all(p.is_meta for p in st.parameters())
    assert sum(p.numel() for p in st.parameters()) == ldm_params(kind, 3, 3, 128, (1, 2, 4), 2, n_embed=n_embed)
