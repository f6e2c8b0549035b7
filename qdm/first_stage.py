"""First-stage autoencoders of QDM: the LDM KL-f4 (medical) and VQ-f4 (real-world) models, run through diffusers.

The authors' ``AutoencoderKLTorch`` / ``VQModelTorch`` (``ldm/models/autoencoder.py``) are the latent-diffusion
Encoder/Decoder; diffusers' ``AutoencoderKL`` / ``VQModel`` hold the same layers under other names, so a checkpoint of
the authors is renamed key by key (:func:`convert_ldm_state_dict`) and loaded strictly (:func:`load_first_stage`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Callable

import torch
from torch import nn

_NO_DIFFUSERS = "the first-stage autoencoders need diffusers: pip install 'qdm-bench[latent]'"
_TRAINING_ONLY = ("loss.",)  # discriminator / LPIPS weights of the authors' training checkpoints


@dataclass(frozen=True)
class FirstStageConfig:
    """The LDM ddconfig (plus embed_dim / n_embed) of one first-stage autoencoder."""

    kind: str  # "kl" (AutoencoderKLTorch) or "vq" (VQModelTorch)
    embed_dim: int
    z_channels: int
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4)
    num_res_blocks: int = 2
    n_embed: int | None = None
    in_channels: int = 3
    out_ch: int = 3
    attn_resolutions: tuple[int, ...] = ()
    resolution: int = 256  # only decides which levels carry attention (attn_resolutions)

    def __post_init__(self):
        """Validate the kind and the codebook size."""
        if self.kind not in ("kl", "vq"):
            raise ValueError(f"first-stage kind must be 'kl' or 'vq', not {self.kind!r}")
        if (self.kind == "vq") != (self.n_embed is not None):
            raise ValueError("a 'vq' first stage needs n_embed (codebook size); a 'kl' one takes none")

    def attention_levels(self) -> list[bool]:
        """Per encoder level: whether its blocks carry attention (LDM: resolution // 2**i in attn_resolutions)."""
        return [self.resolution // 2 ** i in self.attn_resolutions for i in range(len(self.ch_mult))]


FIRST_STAGE_CONFIGS: dict[str, FirstStageConfig] = {
    # configs/inference/*.yaml of the authors: weights/medical_autoencoder.ckpt, weights/autoencoder_vq_f4.pth
    "kl-f4-medical": FirstStageConfig("kl", embed_dim=3, z_channels=3),
    "vq-f4-realworld": FirstStageConfig("vq", embed_dim=3, z_channels=3, n_embed=8192),
}


def config_from_ddconfig(kind: str, ddconfig: dict[str, Any], embed_dim: int,
                         n_embed: int | None = None) -> FirstStageConfig:
    """A :class:`FirstStageConfig` from the authors' ddconfig dict, embed_dim and (vq) n_embed."""
    if bool(ddconfig.get("double_z", kind == "kl")) != (kind == "kl"):
        raise ValueError(f"double_z={ddconfig.get('double_z')} does not fit kind {kind!r} (kl needs True, vq False)")
    return FirstStageConfig(kind, embed_dim=embed_dim, z_channels=ddconfig["z_channels"], ch=ddconfig["ch"],
                            ch_mult=tuple(ddconfig["ch_mult"]), num_res_blocks=ddconfig["num_res_blocks"],
                            n_embed=n_embed, in_channels=ddconfig.get("in_channels", 3),
                            out_ch=ddconfig.get("out_ch", 3),
                            attn_resolutions=tuple(ddconfig.get("attn_resolutions", ())),
                            resolution=ddconfig.get("resolution", 256))


def _diffusers():
    """The diffusers module, or an ImportError of one line."""
    try:
        import diffusers
    except ImportError:
        raise ImportError(_NO_DIFFUSERS) from None
    return diffusers


def build_diffusers_model(cfg: FirstStageConfig) -> nn.Module:
    """The diffusers AutoencoderKL / VQModel with the architecture of ``cfg`` (randomly initialised)."""
    diffusers = _diffusers()
    attn = cfg.attention_levels()
    common = dict(in_channels=cfg.in_channels, out_channels=cfg.out_ch,
                  down_block_types=tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn),
                  up_block_types=tuple("AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in attn[::-1]),
                  block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult), layers_per_block=cfg.num_res_blocks,
                  act_fn="silu", latent_channels=cfg.z_channels, norm_num_groups=32, sample_size=cfg.resolution,
                  scaling_factor=1.0, force_upcast=False, mid_block_add_attention=True)
    if cfg.kind == "vq":
        return diffusers.VQModel(**common, num_vq_embeddings=cfg.n_embed, vq_embed_dim=cfg.embed_dim).eval()
    model = diffusers.AutoencoderKL(**common)
    if cfg.embed_dim != cfg.z_channels:  # diffusers ties the two; LDM maps 2z -> 2e and e -> z
        model.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        model.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
    return model.eval()


class _View(nn.Module):
    """The encode or decode half of a :class:`FirstStage` as its own module (for MAC / parameter counts)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], **parts: nn.Module):
        super().__init__()
        for name, part in parts.items():
            self.add_module(name, part)
        self._fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the half."""
        return self._fn(x)


class FirstStage(nn.Module):
    """An LDM first-stage autoencoder (KL or VQ) with the authors' encode / decode semantics."""

    def __init__(self, config: FirstStageConfig, model: nn.Module | None = None):
        super().__init__()
        self.config = config
        self.model = build_diffusers_model(config) if model is None else model

    @property
    def kind(self) -> str:
        """'kl' or 'vq'."""
        return self.config.kind

    @property
    def downsample_factor(self) -> int:
        """Spatial factor between image and latent: 2**(levels - 1)."""
        return 2 ** (len(self.config.ch_mult) - 1)

    def moments(self, y: torch.Tensor) -> torch.Tensor:
        """KL only: quant_conv(encoder(y)), the posterior's (mean, logvar) stacked on channels."""
        if self.kind != "kl":
            raise ValueError("moments() exists for the 'kl' first stage only")
        return self.model.encode(y).latent_dist.parameters

    def encode(self, y: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Latent of y: KL posterior mode (or a sample when ``sample``); VQ features before quantisation."""
        if self.kind == "vq":
            return self.model.encode(y).latents
        dist = self.model.encode(y).latent_dist
        if not sample:
            return dist.mean
        eps = torch.randn(dist.mean.shape, generator=generator, device=dist.mean.device, dtype=dist.mean.dtype)
        return dist.mean + dist.std * eps

    def decode(self, z: torch.Tensor, quantize: bool = True) -> torch.Tensor:
        """Image of latent z; VQ quantises z to its nearest codebook vectors first unless ``quantize=False``."""
        if self.kind == "vq":
            return self.model.decode(z, force_not_quantize=not quantize).sample
        return self.model.decode(z).sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """decode(encode(x)): one round trip, for cost counting."""
        return self.decode(self.encode(x))

    def encoder_module(self) -> nn.Module:
        """The encode half (encoder + quant_conv) as a module whose forward is :meth:`encode`."""
        return _View(self.encode, encoder=self.model.encoder, quant_conv=self.model.quant_conv)

    def decoder_module(self) -> nn.Module:
        """The decode half (codebook for VQ, post_quant_conv, decoder) as a module whose forward is :meth:`decode`."""
        parts = {"quantize": self.model.quantize} if self.kind == "vq" else {}
        return _View(self.decode, **parts, post_quant_conv=self.model.post_quant_conv, decoder=self.model.decoder)


# diffusers key -> LDM key: applied in order to each key of the diffusers model
_RENAMES: list[tuple[str, str]] = [
    (r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block."),
    (r"^encoder\.down_blocks\.(\d+)\.attentions\.", r"encoder.down.\1.attn."),
    (r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample."),
    (r"^decoder\.up_blocks\.(\d+)\.resnets\.", r"decoder.up.{\1}.block."),
    (r"^decoder\.up_blocks\.(\d+)\.attentions\.", r"decoder.up.{\1}.attn."),
    (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", r"decoder.up.{\1}.upsample."),
    (r"\.mid_block\.resnets\.0\.", ".mid.block_1."), (r"\.mid_block\.resnets\.1\.", ".mid.block_2."),
    (r"\.mid_block\.attentions\.0\.", ".mid.attn_1."),
    (r"\.conv_norm_out\.", ".norm_out."), (r"\.conv_shortcut\.", ".nin_shortcut."),
    (r"\.group_norm\.", ".norm."), (r"\.to_([qkv])\.", r".\1."), (r"\.to_out\.0\.", ".proj_out."),
]


def _ldm_key(key: str, levels: int) -> str:
    """The LDM name of diffusers key ``key`` (decoder up_blocks i is LDM up.{levels-1-i})."""
    for pattern, repl in _RENAMES:
        key = re.sub(pattern, repl, key)
    return re.sub(r"\{(\d+)\}", lambda m: str(levels - 1 - int(m.group(1))), key)


def _is_attn_linear(key: str) -> bool:
    """Whether diffusers key ``key`` is a linear attention weight (a 1x1 conv weight in LDM)."""
    return re.search(r"attentions\.\d+\.(to_[qkv]|to_out\.0)\.weight$", key) is not None


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The LDM-named tensors of a loaded checkpoint: 'state_dict' unwrapped, 'module.' and 'loss.' keys handled."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(obj).__name__}, not a state dict of tensors")
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(_TRAINING_ONLY):
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"entry {key} is a {type(value).__name__}, not a tensor")
        out[key] = value
    return out


def _shape(t: Any) -> tuple[int, ...]:
    """A tensor shape as a plain tuple (for messages)."""
    return tuple(t.shape)


def _describe(cfg: FirstStageConfig) -> str:
    """One-phrase summary of a config for error messages."""
    vq = f", n_embed {cfg.n_embed}" if cfg.kind == "vq" else ""
    return (f"{cfg.kind} first stage (ch {cfg.ch}, ch_mult {list(cfg.ch_mult)}, num_res_blocks {cfg.num_res_blocks}, "
            f"z_channels {cfg.z_channels}, embed_dim {cfg.embed_dim}{vq})")


def convert_ldm_state_dict(state: Any, cfg: FirstStageConfig) -> dict[str, torch.Tensor]:
    """The authors' LDM state dict (or checkpoint dict) renamed and reshaped to the diffusers model's keys."""
    state = unwrap_state_dict(state)
    with torch.device("meta"):
        target = build_diffusers_model(cfg).state_dict()
    ldm_of = {k: _ldm_key(k, len(cfg.ch_mult)) for k in target}
    expected = {ldm_of[k]: _shape(v) + ((1, 1) if _is_attn_linear(k) else ()) for k, v in target.items()}
    fix = "pass the config (or kind) that matches the checkpoint, or config=None to infer it from the weights"
    for key, value in state.items():
        if key not in expected:
            raise ValueError(f"key {key} {_shape(value)} is not part of an LDM {_describe(cfg)}; {fix}")
        if _shape(value) != expected[key]:
            raise ValueError(f"key {key} has shape {_shape(value)} but the LDM {_describe(cfg)} expects "
                             f"{expected[key]}; {fix}")
    for key, shape in expected.items():
        if key not in state:
            raise ValueError(f"key {key} {shape} is missing for an LDM {_describe(cfg)}; {fix}")
    return {k: state[ldm].reshape(target[k].shape) for k, ldm in ldm_of.items()}


def _levels(state: dict[str, torch.Tensor], prefix: str) -> list[int]:
    """The sorted distinct integers n of keys '{prefix}{n}.'."""
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return sorted(found)


def config_from_state_dict(state: Any, kind: str | None = None, resolution: int = 256) -> FirstStageConfig:
    """The config of an LDM first-stage state dict read off its keys and shapes (attention needs ``resolution``)."""
    state = unwrap_state_dict(state)
    kind = kind or ("vq" if "quantize.embedding.weight" in state else "kl")

    def get(key: str) -> torch.Tensor:
        if key not in state:
            raise ValueError(f"key {key} is missing, so this is no LDM {kind} autoencoder state dict; "
                             "check the file, or pass kind/config")
        return state[key]

    levels = len(_levels(state, "encoder.down.")) or 1  # none: get() below names the missing key
    ch = get("encoder.conv_in.weight").shape[0]
    ch_mult = tuple(get(f"encoder.down.{i}.block.0.conv1.weight").shape[0] // ch for i in range(levels))
    attn = [i for i in range(levels) if f"encoder.down.{i}.attn.0.norm.weight" in state]
    return FirstStageConfig(kind, embed_dim=get("post_quant_conv.weight").shape[1],
                            z_channels=get("decoder.conv_in.weight").shape[1], ch=ch, ch_mult=ch_mult,
                            num_res_blocks=len(_levels(state, "encoder.down.0.block.")),
                            n_embed=get("quantize.embedding.weight").shape[0] if kind == "vq" else None,
                            in_channels=get("encoder.conv_in.weight").shape[1],
                            out_ch=get("decoder.conv_out.weight").shape[0],
                            attn_resolutions=tuple(resolution // 2 ** i for i in attn), resolution=resolution)


def read_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The LDM tensors of a checkpoint file, read with weights_only=True (nothing in the file is executed)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"first-stage checkpoint {path} does not exist; check the path") from None
    except Exception as e:  # noqa: BLE001 - a pickle that needs code to run, or not a torch file
        raise ValueError(f"first-stage checkpoint {path} cannot be read as weights ({type(e).__name__}): it must hold "
                         "tensors only (code in a checkpoint is never executed); if you trust it, re-save its "
                         "state_dict with torch.save") from None
    try:
        return unwrap_state_dict(obj)
    except ValueError as e:
        raise ValueError(f"first-stage checkpoint {path} {e}") from None


def load_first_stage(path: str, kind: str | None = None, config: FirstStageConfig | None = None) -> FirstStage:
    """A :class:`FirstStage` with the weights of the authors' checkpoint at ``path`` (config inferred if not given)."""
    state = read_checkpoint(path)
    try:
        if config is None:
            config = config_from_state_dict(state, kind)
        elif kind is not None and kind != config.kind:
            raise ValueError(f"kind {kind!r} contradicts config.kind {config.kind!r}")
        converted = convert_ldm_state_dict(state, config)
    except ValueError as e:
        raise ValueError(f"first-stage checkpoint {path}: {e}") from None
    with torch.device("meta"):
        stage = FirstStage(config)
    stage.model.load_state_dict(converted, strict=True, assign=True)
    return stage.float().eval()


class FirstStageRoundTrip(nn.Module):
    """A first stage under the denoiser calling convention, ``model(x, t, lq, mask=None)`` = decode(encode(x)), so
    its parameters, MACs and memory are measured like any model's (one round trip per super-resolution)."""

    def __init__(self, config: FirstStageConfig):
        super().__init__()
        self.stage = FirstStage(config)

    @property
    def input_multiple(self) -> int:
        """H and W must be multiples of the downsampling factor."""
        return self.stage.downsample_factor

    def forward(self, x: torch.Tensor, t: Any = None, lq: Any = None, mask: Any = None) -> torch.Tensor:
        """decode(encode(x)); t, lq and mask are ignored."""
        h, w = x.shape[-2:]
        f = self.input_multiple
        if x.ndim != 4 or h % f or w % f:
            raise ValueError(f"the first stage needs (B, {self.stage.config.in_channels}, H, W) with H and W multiples "
                             f"of {f}, got {tuple(x.shape)}")
        return self.stage.decode(self.stage.encode(x))

    def adapt_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The authors' LDM layout (or ours) → this module's keys."""
        if all(k.startswith("stage.") for k in state):
            return state
        try:
            converted = convert_ldm_state_dict(state, self.stage.config)
        except ValueError as e:
            raise ValueError(f"{e}") from None
        return {"stage.model." + k: v for k, v in converted.items()}


def kl_f4(**overrides: Any) -> FirstStageRoundTrip:
    """The authors' medical KL-f4 autoencoder (weights/medical_autoencoder.ckpt): encode + decode."""
    return FirstStageRoundTrip(replace(FIRST_STAGE_CONFIGS["kl-f4-medical"], **overrides))


def vq_f4(**overrides: Any) -> FirstStageRoundTrip:
    """The authors' real-world VQ-f4 autoencoder (weights/autoencoder_vq_f4.pth): encode + quantise + decode."""
    return FirstStageRoundTrip(replace(FIRST_STAGE_CONFIGS["vq-f4-realworld"], **overrides))


__all__ = ["FIRST_STAGE_CONFIGS", "FirstStage", "FirstStageConfig", "FirstStageRoundTrip", "kl_f4", "vq_f4", "build_diffusers_model", "config_from_ddconfig",
           "config_from_state_dict", "convert_ldm_state_dict", "load_first_stage", "read_checkpoint",
           "unwrap_state_dict"]
