"""QDM's latent super-resolution pipeline as the authors run it (docs/qdm.md §3.7, §3.10): encode, masked ResShift
sampling in latent space, decode; large images in overlapping tiles blended with Gaussian weights.

LR in [-1, 1] → y = bicubic(LR, ×sf) → z_y = encode(y)·scale_factor → the 15-step masked sampler in latent space with
the quadtree mask of the LR tile → decode(z / scale_factor) → SR in [-1, 1].  Nothing here imports the harness.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
import torch.nn.functional as F

from qdm.sampling import bicubic_y0, check_sr_input, resolve_generator

__all__ = ["LatentPreset", "PRESETS", "preset", "LatentSR", "TileStats", "tile_starts", "gaussian_weight"]


@dataclass(frozen=True)
class LatentPreset:
    """One of the authors' shipped inference configurations (configs/inference/*.yaml)."""

    name: str
    model: str  # registered denoiser: qdm-s, qdm-b or qdm-l (input size 128, window 8, chunk 64)
    first_stage: str  # "kl" (medical KL-f4) or "vq" (real-world VQ-f4)
    sf: int  # LR → HR scale
    scale_factor: float  # latent scale: z = encode(y)·scale_factor
    threshold: float  # inference quadtree threshold s (reference mode, ">=")
    chop_size: int  # LR tile side (latent tile = chop_size·sf / 4)
    chop_stride: int  # LR tile stride
    steps: int = 15
    kappa: float = 2.0
    chunk_size: int = 64
    posterior: str = "reference"  # the authors' reverse step and prior (1e-7 floors on inactive sites)
    threshold_mode: str = "reference"  # the authors' ">=" comparison
    sample_posterior: bool = True  # the KL encoder samples its posterior, as the authors' encode does
    description: str = field(default="", compare=False)


def _presets() -> dict[str, LatentPreset]:
    """The table of shipped configurations, by name."""
    out = {}
    for size in ("s", "b", "l"):
        out[f"realsr-x4-{size}"] = LatentPreset(
            f"realsr-x4-{size}", f"qdm-{size}", "vq", 4, 1.0, 0.0, 128, 112,
            description="real-world x4: VQ-f4 (weights/autoencoder_vq_f4.pth), latent scale 1.0, s = 0.00")
        out[f"medx4-{size}"] = LatentPreset(
            f"medx4-{size}", f"qdm-{size}", "kl", 4, 0.1, 0.15, 128, 112,
            description="medical x4: KL-f4 (weights/medical_autoencoder.ckpt), latent scale 0.1, s = 0.15")
    for size in ("b", "l"):  # the authors ship no medx8 QDM-S inference config
        out[f"medx8-{size}"] = LatentPreset(
            f"medx8-{size}", f"qdm-{size}", "kl", 8, 0.1, 0.15, 64, 48,
            description="medical x8: KL-f4, latent scale 0.1, s = 0.15, LR tile 64 (bicubic x2 inside the model)")
    return out


PRESETS: dict[str, LatentPreset] = _presets()


def preset(name: str, **overrides: Any) -> LatentPreset:
    """The preset ``name`` with some fields replaced (ValueError naming the choices for an unknown name)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]


def tile_starts(length: int, chop: int, stride: int) -> list[int]:
    """Tile offsets covering [0, length) with tiles of ``chop`` every ``stride``, the last one flush with the end."""
    if length <= chop:
        return [0]
    starts = list(range(0, length - chop + 1, stride))
    if starts[-1] != length - chop:
        starts.append(length - chop)
    return starts


def gaussian_weight(size: int, device: Any = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Separable Gaussian blending weight (size, size) with OpenCV's default σ = 0.3·((size−1)/2 − 1) + 0.8."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g).to(device=device, dtype=dtype)


@dataclass
class TileStats:
    """What the sampler ran: tiles and their masks (for costs and densities)."""

    tiles: int = 0
    tile_lr: tuple[int, int] = (0, 0)  # LR tile size after padding
    latent: tuple[int, int] = (0, 0)  # latent tile size
    model_masks: list[torch.Tensor] = field(default_factory=list)  # per tile batch: (B, H/2, W/2) patch masks
    densities: list[float] = field(default_factory=list)  # per tile: fraction of active patch bits


class LatentSR:
    """The authors' latent SR pipeline: ``LatentSR(denoiser, first_stage, preset)(lr)`` → SR image in [-1, 1].

    ``denoiser`` is a QDM network (``model(x, t, lq, mask=...)``); ``first_stage`` has ``encode(y, sample,
    generator)`` and ``decode(z)`` (:class:`qdm.first_stage.FirstStage`).  Images larger than the preset's
    ``chop_size`` (on either side) are cut into overlapping tiles (``chop_stride``) that are super-resolved
    ``tile_batch`` at a time and blended with Gaussian weights; smaller ones are reflect-padded to the tile size
    and cropped back.  Randomness (prior, reverse-step noise, KL posterior sample) comes from one generator.
    """

    def __init__(self, denoiser: torch.nn.Module, first_stage: Any, preset: LatentPreset, tile_batch: int = 4,
                 diffusion: Any = None):
        from qdm.diffusion import ResShiftDiffusion, eta_schedule

        if tile_batch < 1:
            raise ValueError(f"tile_batch must be at least 1, got {tile_batch}")
        self.denoiser, self.first_stage, self.preset, self.tile_batch = denoiser, first_stage, preset, tile_batch
        self.diffusion = diffusion or ResShiftDiffusion(eta_schedule(steps=preset.steps, kappa=preset.kappa),
                                                        posterior=preset.posterior)
        self.factor = int(getattr(first_stage, "downsample_factor", 4))

    def latent_size(self, h: int, w: int) -> tuple[int, int]:
        """Latent size of an LR tile of (h, w)."""
        return h * self.preset.sf // self.factor, w * self.preset.sf // self.factor

    def encode(self, lr: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """z_y = encode(bicubic(lr, ×sf))·scale_factor."""
        y = bicubic_y0(lr, self.preset.sf)
        sample = self.preset.sample_posterior and getattr(self.first_stage, "kind", "kl") == "kl"
        return self.first_stage.encode(y, sample=sample, generator=generator) * self.preset.scale_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """decode(z / scale_factor)."""
        return self.first_stage.decode(z / self.preset.scale_factor)

    def sample_tiles(self, lr: torch.Tensor, generator: torch.Generator | None,
                     stats: TileStats | None = None) -> torch.Tensor:
        """Super-resolve a batch of LR tiles (B, C, h, w) in [-1, 1]: the chain of one tile batch."""
        p = self.preset
        z_y = self.encode(lr, generator)
        res = self.diffusion.sample(self.denoiser, lr, sf=p.sf, threshold=p.threshold, mode=p.threshold_mode,
                                    generator=generator, clamp=False, y0=z_y)
        if stats is not None:
            stats.model_masks.append(res.model_mask.detach().cpu())
            stats.densities += [float(d) for d in res.density]
            stats.latent = tuple(z_y.shape[-2:])
        return self.decode(res.sr).clamp(-1, 1)

    def __call__(self, lr: torch.Tensor, seed: int | None = 0, generator: torch.Generator | None = None,
                 stats: TileStats | None = None,
                 on_tile: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """SR of ``lr`` (1, C, H, W) in [-1, 1] → (1, C, H·sf, W·sf) in [-1, 1]; ``on_tile(done, total)`` hears
        progress."""
        check_sr_input(lr, self.preset.sf)
        if lr.shape[0] != 1:
            raise ValueError(f"LatentSR takes one image at a time (1, C, H, W), got batch {lr.shape[0]}")
        generator = resolve_generator(seed, generator, lr.device)
        p, sf = self.preset, self.preset.sf
        _, c, H, W = lr.shape
        chop = p.chop_size
        padded = _pad_to(lr, max(H, chop), max(W, chop))
        ph, pw = padded.shape[-2:]
        boxes = [(i, j) for i in tile_starts(ph, chop, p.chop_stride) for j in tile_starts(pw, chop, p.chop_stride)]
        stats = stats if stats is not None else TileStats()
        stats.tiles, stats.tile_lr = len(boxes), (chop, chop)
        out = lr.new_zeros(1, c, ph * sf, pw * sf)
        total = lr.new_zeros(1, 1, ph * sf, pw * sf)
        weight = gaussian_weight(chop * sf, lr.device, lr.dtype)
        for k in range(0, len(boxes), self.tile_batch):
            group = boxes[k:k + self.tile_batch]
            tiles = torch.cat([padded[..., i:i + chop, j:j + chop] for i, j in group])
            sr = self.sample_tiles(tiles, generator, stats)
            for n, (i, j) in enumerate(group):
                box = (..., slice(i * sf, (i + chop) * sf), slice(j * sf, (j + chop) * sf))
                out[box] += sr[n:n + 1] * weight
                total[box] += weight
            if on_tile:
                on_tile(min(k + self.tile_batch, len(boxes)), len(boxes))
        return (out / total)[..., :H * sf, :W * sf]


def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Pad (bottom, right) to (h, w): reflect where the image is large enough, else replicate."""
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    mode = "reflect" if dh < x.shape[-2] and dw < x.shape[-1] else "replicate"
    return F.pad(x, (0, dw, 0, dh), mode=mode)
