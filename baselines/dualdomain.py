"""Dual-domain ResShift (`dualdomain-resshift`): a spatial + DCT + DWT U-Net in a residual-shifting chain.

Spec: docs/seed-systems.md §2 (a clean-room re-build from the specification; no upstream code is used).

* :class:`DualDomainUNet` — the §2.3 network (1,387,075 parameters), wrapped as a qdm-bench adapter
  ``model(x_t, t, lq, mask=None)`` that returns the residual x̂₀ − y₀ (pred_type ``x0_residual``).
* :class:`DualDomainDiffusion` — the §2.4 process: η schedule (η₁ = 0.008, η_T = 0.999, p = 0.3, T = 15), the
  multiscale pixel + DCT loss and the project's reverse step, with ``posterior="resshift"`` as the exact alternative.

Adapter conventions (docs/seed-systems.md §1.1, §2.7):

* ``lq`` is the LR image in [-1, 1] (qdm-bench's range) at LR size, or already at x_t's size.  y₀ is its bicubic
  upsampling to x_t's size with ``F.interpolate(mode="bicubic", align_corners=False)``, not clamped, exactly as
  the training data and the samplers build it.  The upstream used PIL bicubic on 8-bit images, whose output is
  also rounded and clipped to the range; that small difference is accepted.
* ``t`` holds qdm-bench step indices i ∈ [0, 15); the network embeds the upstream's float index t = i + 1 (1 … 15).
* ``mask`` is ignored: the model has no sparse path.

Transforms (both branches verified against scipy.fft.dctn(norm="ortho") and pywt.dwt2("haar", mode="reflect")):

* DCT, ``dct_impl="fft"`` (default): torch-dct 0.1.6 ``dct_2d``/``idct_2d`` with ``norm="ortho"``, the original's
  library.  It is FFT-based, so it runs on CPU, CUDA and the meta device, and FlopCounterMode counts **0** MACs for it.
  ``dct_impl="matrix"``: products with the dense orthonormal DCT-II matrices (D_H·X·D_Wᵀ); FlopCounterMode counts
  them, 2·C·H·W·(H + W) per block (forward + inverse), i.e. :meth:`DualDomainUNet.cost_extras` ``dct_macs_dense``.
* DWT, ``dwt_impl="ptwt"`` (default): ptwt 1.0.1 ``wavedec2``/``waverec2`` (Haar, level 1, reflect), a maintained
  differentiable wavelet library; it filters with strided (transposed) convolutions, which FlopCounterMode counts:
  4 MACs per element each way, 8·C·H·W per block (``dwt_macs``).  ``dwt_impl="polyphase"``: the same transform as
  sums and differences of the 2×2 polyphase components (exact for the even sizes the model requires), which counts
  0 MACs — with it, a MAC counter (torch's FlopCounterMode) gives exactly the specified conv + linear figure (38.84 GMAC at
  256², ``layer_macs``).
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from qdm.diffusion import EtaSchedule, ResShiftDiffusion, eta_schedule
from qdm.sampling import SampleResult, bicubic_y0, check_sr_input, mask_free_result, resolve_generator, run_chain

__all__ = [
    "dct2", "idct2", "dwt_haar", "idwt_haar", "fourier_features", "amplitude_map", "time_embedding", "DCTBranch",
    "DWTBranch", "DDB", "DualDomainUNet", "dualdomain_resshift", "DUALDOMAIN_CFG", "dualdomain_eta_schedule",
    "DualDomainDiffusion", "DCT_IMPLS", "DWT_IMPLS", "POSTERIORS",
]

DCT_IMPLS = ("fft", "matrix")
DWT_IMPLS = ("ptwt", "polyphase")
POSTERIORS = ("dualdomain", "resshift")


def _require(module: str, impl: str):
    """Import an optional transform library, or fail with the package to install and the dependency-free option."""
    try:
        return importlib.import_module(module)
    except ImportError:  # pragma: no cover - both are installed in the project's environment
        pkg, alt = {"torch_dct": ("torch-dct", "dct_impl='matrix'"), "ptwt": ("ptwt", "dwt_impl='polyphase'")}[module]
        raise ImportError(f"dualdomain-resshift ({impl}) needs torch-dct and ptwt: pip install 'qdm-bench[dualdomain]' "
                          f"(or use {alt})") from None


# ----------------------------------------------------------------------------------------------------- transforms
@lru_cache(maxsize=32)
def _dct_matrix(n: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """Orthonormal DCT-II matrix D (n × n): D[k, j] = s_k·cos(π(2j + 1)k / 2n), s_0 = √(1/n), s_k = √(2/n)."""
    with torch.inference_mode(False):  # cached: must stay usable by autograd after an inference-mode call
        k = torch.arange(n, dtype=torch.float64)[:, None]
        j = torch.arange(n, dtype=torch.float64)[None, :]
        d = torch.cos(math.pi * (2 * j + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
        d[0] /= math.sqrt(2.0)
        return d.to(device=device, dtype=dtype)


def dct2(x: torch.Tensor, impl: str = "fft") -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dimensions (torch-dct's FFT algorithm, or dense matrices)."""
    if impl == "fft":
        return _require("torch_dct", "dct_impl='fft'").dct_2d(x, norm="ortho")
    dh, dw = _dct_matrix(x.shape[-2], str(x.device), x.dtype), _dct_matrix(x.shape[-1], str(x.device), x.dtype)
    return dh @ x @ dw.transpose(0, 1)


def idct2(x: torch.Tensor, impl: str = "fft") -> torch.Tensor:
    """Inverse of :func:`dct2` (orthonormal DCT-III over the last two dimensions)."""
    if impl == "fft":
        return _require("torch_dct", "dct_impl='fft'").idct_2d(x, norm="ortho")
    dh, dw = _dct_matrix(x.shape[-2], str(x.device), x.dtype), _dct_matrix(x.shape[-1], str(x.device), x.dtype)
    return dh.transpose(0, 1) @ x @ dw


def dwt_haar(x: torch.Tensor, impl: str = "ptwt") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1-level orthonormal Haar DWT (reflect mode) of even-sized x → (LL, LH, HL, HH) = pywt's (cA, cH, cV, cD)."""
    if impl == "ptwt":
        ll, (lh, hl, hh) = _require("ptwt", "dwt_impl='ptwt'").wavedec2(x, "haar", mode="reflect", level=1)
        return ll, lh, hl, hh
    a, b, c, d = x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return (a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2


def idwt_haar(ll: torch.Tensor, lh: torch.Tensor, hl: torch.Tensor, hh: torch.Tensor,
              impl: str = "ptwt") -> torch.Tensor:
    """Inverse of :func:`dwt_haar`."""
    if impl == "ptwt":
        ptwt = _require("ptwt", "dwt_impl='ptwt'")
        return ptwt.waverec2((ll, ptwt.WaveletDetailTuple2d(lh, hl, hh)), "haar")
    a, b = (ll + lh + hl + hh) / 2, (ll + lh - hl - hh) / 2
    c, d = (ll - lh + hl - hh) / 2, (ll - lh - hl + hh) / 2
    top = torch.stack([a, b], dim=-1).flatten(-2)  # interleave columns
    bottom = torch.stack([c, d], dim=-1).flatten(-2)
    return torch.stack([top, bottom], dim=-2).flatten(-3, -2)  # interleave rows


# ----------------------------------------------------------------------------------------------------- conditioning
def fourier_features(batch: int, height: int, width: int, num_freqs: int = 6, device=None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, 4·num_freqs, H, W): per frequency 2^k·π the channels [sin x, sin y, cos x, cos y], x, y = linspace(0, 1)."""
    ys = torch.linspace(0, 1, height, device=device, dtype=dtype)
    xs = torch.linspace(0, 1, width, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    chans = []
    for k in range(num_freqs):
        f = (2.0 ** k) * math.pi
        chans += [torch.sin(f * xx), torch.sin(f * yy), torch.cos(f * xx), torch.cos(f * yy)]
    return torch.stack(chans).unsqueeze(0).expand(batch, -1, -1, -1)


def amplitude_map(y0: torch.Tensor, kernel: int = 7) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1): min-max normalised √(RGB-mean local variance + 1e-6) of y₀ mapped to [0, 1].

    Local means use a kernel×kernel stride-1 box filter with zero padding counted (``avg_pool2d`` defaults), so even a
    constant non-black image has non-zero variance within kernel//2 pixels of the border.
    """
    u = (y0 + 1) / 2
    mean = F.avg_pool2d(u, kernel, 1, kernel // 2)
    sq = F.avg_pool2d(u * u, kernel, 1, kernel // 2)
    a = torch.sqrt((sq - mean * mean).clamp_min(0).mean(dim=1, keepdim=True) + 1e-6)
    lo, hi = a.amin(dim=(2, 3), keepdim=True), a.amax(dim=(2, 3), keepdim=True)
    return (a - lo) / (hi - lo + 1e-6)


def time_embedding(t: torch.Tensor, dim: int = 128) -> torch.Tensor:
    """(B, dim): [sin(t·f_i) | cos(t·f_i)], f_i = exp(−i·ln(1e4)/(dim/2 − 1)), t used as a float."""
    half = dim // 2
    freqs = torch.exp(-math.log(1e4) * torch.arange(half, device=t.device, dtype=torch.float32) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


# ----------------------------------------------------------------------------------------------------- blocks
def _conv_relu_conv_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(), nn.Conv2d(cout, cout, k, padding=k // 2),
                         nn.ReLU())


class DCTBranch(nn.Module):
    """Orthonormal 2-D DCT over the whole map → conv1×1, ReLU, conv1×1 → inverse DCT."""

    def __init__(self, c: int, impl: str = "fft"):
        super().__init__()
        self.impl = impl
        self.filter = nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return idct2(self.filter(dct2(x, self.impl)), self.impl)


class DWTBranch(nn.Module):
    """1-level Haar DWT → a separate conv1×1 on each of LL, LH, HL, HH → inverse DWT."""

    def __init__(self, c: int, impl: str = "ptwt"):
        super().__init__()
        self.impl = impl
        self.ll, self.lh, self.hl, self.hh = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ll, lh, hl, hh = dwt_haar(x, self.impl)
        return idwt_haar(self.ll(ll), self.lh(lh), self.hl(hl), self.hh(hh), self.impl)


class DDB(nn.Module):
    """Dual-domain block: x + conv1×1(concat(spatial(x), DCT branch(x), DWT branch(x)))."""

    def __init__(self, c: int, dct: bool = True, dwt: bool = True, dct_impl: str = "fft", dwt_impl: str = "ptwt"):
        super().__init__()
        self.channels = c
        self.spatial = _conv_relu_conv_relu(c, c)
        self.dct = DCTBranch(c, dct_impl) if dct else None
        self.dwt = DWTBranch(c, dwt_impl) if dwt else None
        self.fuse = nn.Conv2d((1 + dct + dwt) * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.spatial(x)] + [branch(x) for branch in (self.dct, self.dwt) if branch is not None]
        return x + self.fuse(torch.cat(parts, dim=1))


# ----------------------------------------------------------------------------------------------------- network
class DualDomainUNet(nn.Module):
    """The §2.3 U-Net as a qdm-bench adapter: ``model(x_t, t, lq, mask=None)`` → residual x̂₀ − y₀ (B, 3, H, W)."""

    space = "pixel"
    pred_type = "x0_residual"
    t_convention = "qdm-bench step index i in [0, T); embedded as the upstream float index i + 1"
    requires_uniform_t_in_batch = False
    input_multiple = 8  # two max-pools, then the Haar DWT needs even H/4, W/4

    def __init__(self, channels: int = 64, time_dim: int = 128, time_hidden: int = 512, num_freqs: int = 6,
                 amp_kernel: int = 7, dct: bool = True, dwt: bool = True, dct_impl: str = "fft",
                 dwt_impl: str = "ptwt"):
        super().__init__()
        if dct_impl not in DCT_IMPLS:
            raise ValueError(f"dct_impl must be one of {DCT_IMPLS}, got {dct_impl!r}")
        if dwt_impl not in DWT_IMPLS:
            raise ValueError(f"dwt_impl must be one of {DWT_IMPLS}, got {dwt_impl!r}")
        c = channels
        self.channels, self.time_dim, self.num_freqs, self.amp_kernel = c, time_dim, num_freqs, amp_kernel
        self.use_dct, self.use_dwt, self.dct_impl, self.dwt_impl = bool(dct), bool(dwt), dct_impl, dwt_impl
        self.in_channels = 3 + 3 + 4 * num_freqs + 1
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_hidden), nn.GELU(), nn.Linear(time_hidden, c))
        self.inc = _conv_relu_conv_relu(self.in_channels, c)

        def ddb(width: int) -> DDB:
            return DDB(width, dct, dwt, dct_impl, dwt_impl)

        self.down1, self.down2, self.bot = ddb(c), ddb(c), ddb(c)
        self.up1, self.dec1 = nn.Conv2d(c, c, 1), ddb(2 * c)
        self.up2, self.dec2 = nn.Conv2d(2 * c, c, 1), ddb(2 * c)
        self.outc = nn.Conv2d(2 * c, 3, 1)

    def check_resolution(self, height: int, width: int) -> None:
        """Raise ValueError unless H and W are positive multiples of 8."""
        m = self.input_multiple
        if height <= 0 or width <= 0 or height % m or width % m:
            raise ValueError(f"dualdomain-resshift needs H and W to be positive multiples of {m}, got {height}x{width}")

    def condition(self, lq: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(y₀, aug(y₀)): y₀ = bicubic(lq) at (H, W); aug = [y₀ (3), Fourier encoding (24), amplitude map (1)]."""
        y0 = lq if lq.shape[-2:] == (height, width) else F.interpolate(
            lq, size=(height, width), mode="bicubic", align_corners=False)
        pos = fourier_features(y0.shape[0], height, width, self.num_freqs, y0.device, y0.dtype)
        return y0, torch.cat([y0, pos, amplitude_map(y0, self.amp_kernel)], dim=1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Residual f with x̂₀ = y₀ + f, from x_t (B, 3, H, W), step indices t (B,) and lq in [-1, 1]."""
        b, _, height, width = x_t.shape
        self.check_resolution(height, width)
        dtype = self.outc.weight.dtype
        t = t.expand(b) if t.ndim == 0 else t
        temb = self.time_mlp(time_embedding(t.float() + 1, self.time_dim).to(dtype))
        _, aug = self.condition(lq.to(dtype), height, width)
        x1 = self.inc(torch.cat([x_t.to(dtype), aug], dim=1)) + temb[:, :, None, None]
        x2 = self.down1(F.max_pool2d(x1, 2))
        x4 = self.bot(self.down2(F.max_pool2d(x2, 2)))
        up = F.interpolate(x4, scale_factor=2, mode="bilinear", align_corners=True)
        d1 = self.dec1(torch.cat([self.up1(up), x2], dim=1))
        up = F.interpolate(d1, scale_factor=2, mode="bilinear", align_corners=True)
        d2 = self.dec2(torch.cat([self.up2(up), x1], dim=1))
        return self.outc(d2).to(x_t.dtype)

    def _blocks(self) -> list[tuple[DDB, int]]:
        """Every DDB with the factor its resolution is divided by."""
        return [(self.down1, 2), (self.down2, 4), (self.bot, 4), (self.dec1, 2), (self.dec2, 1)]

    def cost_extras(self, height: int, width: int, batch: int = 1) -> dict[str, Any]:
        """Analytic costs next to the counted MACs: layers (conv + linear), dense DCT, ptwt's Haar filter convs.

        * ``layer_macs``: the network's own convolutions and linears (docs/seed-systems.md §2.3: 38.84 GMAC at 256²);
        * ``dct_macs_dense``: 2·Σ_blocks C·H_l·W_l·(H_l + W_l) — the DCT and inverse as dense matrix products;
          ``dct_macs_counted`` is what a FlopCounterMode count includes for the DCT (0 for "fft");
        * ``dwt_macs``: 8·Σ_blocks C·H_l·W_l — the Haar analysis + synthesis as ptwt's strided convs;
          ``dwt_macs_counted`` is what count_macs includes (0 for "polyphase");
        * so count_macs(...).macs = layer_macs + dct_macs_counted + dwt_macs_counted;
        * ``notes``: what a measurement row should say (the FFT DCT's dense-equivalent MACs).
        """
        self.check_resolution(height, width)
        c, n = self.channels, height * width
        lin = self.time_mlp[0].in_features * self.time_mlp[0].out_features \
            + self.time_mlp[2].in_features * self.time_mlp[2].out_features
        layers = 9 * (self.in_channels * c + c * c) * n + c * c * n // 4 + 2 * c * c * n + 2 * c * 3 * n
        dct_dense = dwt = 0
        for block, f in self._blocks():
            h, w, cb = height // f, width // f, block.channels
            nb = 1 + self.use_dct + self.use_dwt
            layers += (18 + 2 * self.use_dct + self.use_dwt + nb) * cb * cb * h * w
            dct_dense += 2 * cb * h * w * (h + w) if self.use_dct else 0
            dwt += 8 * cb * h * w if self.use_dwt else 0
        layers += lin
        return {
            "layer_macs": batch * layers,
            "dct_macs_dense": batch * dct_dense,
            "dct_macs_counted": batch * dct_dense if self.dct_impl == "matrix" else 0,
            "dct_impl": ("torch-dct dct_2d/idct_2d (FFT)" if self.dct_impl == "fft" else "dense matrix products")
            if self.use_dct else "off",
            "dwt_macs": batch * dwt,
            "dwt_macs_counted": batch * dwt if self.dwt_impl == "ptwt" else 0,
            "dwt_impl": ("ptwt wavedec2/waverec2 (strided convs)" if self.dwt_impl == "ptwt" else
                         "polyphase sums and differences") if self.use_dwt else "off",
            "notes": [f"DCT via torch-dct dct_2d/idct_2d (FFT) is not in MACs; as dense matrix products it would add "
                      f"{batch * dct_dense / 1e9:,.2f} GMACs"] if dct_dense and self.dct_impl == "fft" else [],
        }


DUALDOMAIN_CFG = dict(channels=64, time_dim=128, time_hidden=512, num_freqs=6, amp_kernel=7, dct=True, dwt=True,
                      dct_impl="fft", dwt_impl="ptwt")


def dualdomain_resshift(**kwargs) -> DualDomainUNet:
    """Dual-domain (spatial + DCT + DWT) ResShift U-Net, predicts x0 - y0 (1,387,075 parameters)."""
    return DualDomainUNet(**{**DUALDOMAIN_CFG, **kwargs})


# ----------------------------------------------------------------------------------------------------- diffusion
def dualdomain_eta_schedule(steps: int = 15, eta_1: float = 0.008, eta_T: float = 0.999, power: float = 0.3,
                            kappa: float = 2.0) -> EtaSchedule:
    """§2.4: √η_t = √η₁·b^((T−1)·((t−1)/(T−1))^p), b = (η_T/η₁)^(1/(2(T−1))); entry i is the paper's t = i + 1.

    This is qdm's ResShift 'exponential' schedule with √η₁ as its start and √η_T as its end (its start is
    min(m/κ, m), hence m = √η₁·max(κ, 1)); η does not depend on κ.
    """
    if not (0 < eta_1 < eta_T <= 1):
        raise ValueError(f"need 0 < eta_1 < eta_T <= 1, got eta_1={eta_1!r}, eta_T={eta_T!r}")
    return eta_schedule(steps, min_noise_level=math.sqrt(eta_1) * max(kappa, 1.0), etas_end=math.sqrt(eta_T),
                        kappa=kappa, power=power)


class DualDomainDiffusion:
    """The project's residual-shifting process (§2.4): forward, multiscale pixel + DCT loss, 15-step reverse."""

    def __init__(self, steps: int = 15, eta_1: float = 0.008, eta_T: float = 0.999, power: float = 0.3,
                 kappa: float = 2.0, kappa_sample: float = 2.0, scales: Sequence[int] = (1, 2, 4),
                 freq_weight: float = 2.0, dct_impl: str = "fft"):
        """``kappa`` is the training κ (2.0); ``kappa_sample`` the sampling κ (2.0; the upstream evaluation cell uses
        0.8)."""
        if dct_impl not in DCT_IMPLS:
            raise ValueError(f"dct_impl must be one of {DCT_IMPLS}, got {dct_impl!r}")
        self._eta_args = dict(steps=steps, eta_1=eta_1, eta_T=eta_T, power=power)
        self.schedule = dualdomain_eta_schedule(kappa=kappa, **self._eta_args)
        self.kappa_sample = float(kappa_sample)
        self.scales = tuple(int(s) for s in scales)
        self.freq_weight = float(freq_weight)
        self.dct_impl = dct_impl
        self._process = ResShiftDiffusion(self.schedule, normalize_input=False)  # q_sample, prior, ResShift step

    @property
    def num_steps(self) -> int:
        """Number of diffusion steps (network evaluations) T."""
        return self.schedule.steps

    @property
    def kappa(self) -> float:
        """Training noise scale κ."""
        return self.schedule.kappa

    def __repr__(self) -> str:
        return (f"DualDomainDiffusion(steps={self.num_steps}, kappa={self.kappa}, kappa_sample={self.kappa_sample}, "
                f"scales={self.scales}, freq_weight={self.freq_weight})")

    def sampler_process(self, kappa: float | None = None) -> ResShiftDiffusion:
        """A ResShift process on the same η with noise scale ``kappa`` (default ``kappa_sample``)."""
        kappa = self.kappa_sample if kappa is None else float(kappa)
        if kappa == self.kappa:
            return self._process
        return ResShiftDiffusion(dualdomain_eta_schedule(kappa=kappa, **self._eta_args), normalize_input=False)

    def scale_input(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network input for x_t: x_t itself (this project does not normalise it)."""
        return x_t

    def q_sample(self, x0: torch.Tensor, y0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t = (1 − η_t)·x₀ + η_t·y₀ + κ·√η_t·ε for step indices t (paper t + 1)."""
        return self._process.q_sample(x0, y0, t, None, noise, generator=generator)

    def multiscale_loss(self, x0_hat: torch.Tensor, x0: torch.Tensor) -> dict[str, torch.Tensor]:
        """Σ_s (1/s)/Σ(1/s)·[L1(pixels) + freq_weight·L1(orthonormal 2-D DCT)] on bilinear ↓s, both sides in [0, 1].

        ↓s is ``F.interpolate(size=(H//s, W//s), mode="bilinear", align_corners=False)`` without antialiasing
        [assumed: docs/seed-systems.md §2.4 says only "bilinear"].
        """
        pred, target = (x0_hat + 1) / 2, (x0 + 1) / 2
        norm = sum(1.0 / s for s in self.scales)
        pix = freq = pred.new_zeros(())
        h, w = pred.shape[-2:]
        for s in self.scales:
            p, q = pred, target
            if s != 1:
                p = F.interpolate(pred, size=(h // s, w // s), mode="bilinear", align_corners=False)
                q = F.interpolate(target, size=(h // s, w // s), mode="bilinear", align_corners=False)
            pix = pix + (1.0 / s) / norm * (p - q).abs().mean()
            freq = freq + (1.0 / s) / norm * (dct2(p, self.dct_impl) - dct2(q, self.dct_impl)).abs().mean()
        return {"loss": pix + self.freq_weight * freq, "l1_pixel": pix, "l1_dct": freq}

    def training_loss(self, model: Callable, x0: torch.Tensor, y0: torch.Tensor, lq: torch.Tensor,
                      mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                      **ignored: Any) -> dict[str, torch.Tensor]:
        """Multiscale loss on x̂₀ = y₀ + model(x_t, t, lq); t ~ U{0 … T−1} per sample, noise ~ N(0, I) from
        ``generator`` unless given.  Returns {"loss", "l1_pixel", "l1_dct"}; ``mask`` and other keywords are
        ignored."""
        b = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.num_steps, (b,), generator=generator, device=x0.device)
        x_t = self.q_sample(x0, y0, t, noise, generator=generator)
        return self.multiscale_loss(y0 + model(x_t, t, lq), x0)

    def p_step(self, x_t: torch.Tensor, x0_hat: torch.Tensor, y0: torch.Tensor, t: torch.Tensor,
               posterior: str = "dualdomain", noise: torch.Tensor | None = None, *, kappa: float | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One reverse step x_t → x_{t−1} (step index t; no noise at index 0), σ² = κ²·(η_{t−1}/η_t)·α_t.

        "resshift": μ = (η_{t−1}/η_t)·x_t + (α_t/η_t)·x̂₀ (the exact Gaussian posterior).  "dualdomain" (the project):
        μ = (η_{t−1}/η_t)·x_t + (α_t/η_t)·(1 − η_{t−1})·x̂₀ + (α_t·η_{t−1}/η_t)·y₀, i.e. the ResShift step applied to
        x̂₀ + η_{t−1}·(y₀ − x̂₀) in place of x̂₀.
        """
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
        process = self.sampler_process(kappa)
        if posterior == "dualdomain":
            idx = process._t(t, x_t)
            eta_prev = process._gather(process.schedule.etas_prev, idx, x_t)
            x0_hat = x0_hat + eta_prev * (y0 - x0_hat)
        return process.p_step(x_t, x0_hat, t, None, noise, generator=generator)

    def sample(self, model: Callable, lq: torch.Tensor, sf: int = 4, threshold: float | None = None,
               seed: int | None = None, generator: torch.Generator | None = None, posterior: str = "dualdomain",
               deterministic: bool = False, progress: bool = False, kappa: float | None = None,
               return_trajectory: bool = False, **ignored: Any) -> SampleResult:
        """Super-resolve ``lq`` (B, 3, h, w) in [-1, 1] by ``sf`` with T network evaluations; .sr in [-1, 1].

        y₀ = bicubic(lq, ×sf); x_T = y₀ + κ·√η_T·ε; for i = T−1 … 0: x̂₀ = clip(y₀ + model(x, i, lq), −1, 1),
        x ← :meth:`p_step` (``posterior``).  κ is ``kappa`` or ``kappa_sample``.  ``deterministic``: x_T = y₀ and
        no noise in the steps either (docs/seed-systems.md §2.4 states only the noise-free start [inferred]).  ``threshold`` is
        ignored (no mask: the mask fields are all ones, densities 1).  Randomness comes only from ``generator`` (or
        one seeded with ``seed``).  The caller is responsible for ``torch.no_grad()`` and ``model.eval()``.
        """
        check_sr_input(lq, sf)
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
        generator = resolve_generator(seed, generator, lq.device)
        b = lq.shape[0]
        y0 = bicubic_y0(lq, sf)
        process = self.sampler_process(kappa)
        zero = torch.zeros_like(y0)

        def step(i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            t = torch.full((b,), i, dtype=torch.long, device=lq.device)
            x0_hat = (y0 + model(x, t, lq)).clamp(-1, 1)
            return self.p_step(x, x0_hat, y0, t, posterior, zero if deterministic else None, kappa=kappa,
                               generator=generator), x0_hat

        x_T = y0.clone() if deterministic else process.prior_sample(y0, generator=generator)
        chain = run_chain(step, x_T, range(self.num_steps - 1, -1, -1), progress, return_trajectory)
        return mask_free_result(chain.x.clamp(-1, 1), y0, chain.trajectory, chain.predictions)
