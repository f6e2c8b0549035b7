"""BI-DiffSR (Chen et al., NeurIPS 2024): the binarised conditional DDPM U-Net for SR (diffusion: bi_diffsr_ddpm).

Spec: docs/seed-systems.md §4 (architecture §4.3, cost §4.4, adapter §4.7), §1.1; no upstream code is used.

* :class:`BIDiffSRUNet` — the network of §4.3.  ``model(x_t, t, lq, mask=None)`` → ε (the mask is ignored): ``lq`` is
  the LR image in qdm-bench's [-1, 1] (at LR size, or already at x_t's size).  The adapter bicubic-upsamples it to x_t's
  size with ``F.interpolate(mode="bicubic", align_corners=False)`` (upstream used OpenCV INTER_CUBIC on the data,
  which differs slightly at borders and in its cubic coefficient), maps it to the model's native [0, 1] range
  ((lq + 1) / 2), reflect-pads condition and x_t (right/bottom) to a multiple of 8, runs the U-Net on
  concat(condition, x_t) (condition first) and crops.  x_t lives in the native [0, 1]-data DDPM space; ``t`` is a (B,)
  integer DDPM timestep in [0, 2000) and must be the same for the whole batch (the TaR/TaA group comes from it).

Binarisation is *simulated*: ±1 activations and ±α weights run through floating-point conv kernels, so measured latency
and memory are those of the 51.3 M-parameter FP network.  :meth:`BIDiffSRUNet.cost_extras` gives the binary-network
accounting (BOPs, OPs = FP MACs + BOPs/64, deployed parameters = binary/32 + FP).

Options (factory keywords): ``binary_mode`` "simulated" | "fp" (no sign on activations or weights: the FP
counterpart with identical parameters and MACs), ``K`` timestep groups, ``tar`` / ``taa`` (off = one group for that
component, i.e. a plain learnable shift / RPReLU, as in the paper's TaR/TaA ablation), ``fusion`` "cs" | "concat" |
"split", ``fp_res`` (decoder resolutions, at ``image_size``, that are full precision; ``()`` binarises every decoder
level).  The "concat" and "split" fusions are the paper's ablation variants; their exact upstream form is not
specified (docs/seed-systems.md §4.3), so they are [assumed]: concat = one 1×1 BI-Conv 2c → c whose
full-precision shortcut is the sum of the two halves (FP: one 1×1 conv 2c → c with bias); split = BI-Conv(decoder
half) + BI-Conv(skip half) (FP: two 1×1 convs).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ApproxSign", "binarize_weight", "BinaryWeight", "BinaryConv2d", "frozen_binary_weights", "BIConv", "ResBlock",
    "CPDown", "CPUp", "Fusion", "SelfAttention", "timestep_embedding", "timestep_group", "BIDiffSRUNet",
    "BI_DIFFSR_CFG", "bi_diffsr", "bi_diffsr_fp", "T_MAX",
]

T_MAX = 2000  # DDPM training steps; TaR/TaA groups partition [0, T_MAX)
BINARY_MODES = ("simulated", "fp")
FUSIONS = ("cs", "concat", "split")
SIMULATED_NOTE = ("binary network simulated in floating point: measured latency and memory are those of the float "
                  "network; BOPs/OPs (fp MACs + BOPs/64) and deployed params are analytic")


# ----------------------------------------------------------------------------------------------------- binarisation
class ApproxSign(torch.autograd.Function):
    """sign(x) forward; ApproxSign / Bi-Real backward: d/dx = 2 − 2|x| on (−1, 1), 0 elsewhere.

    That is 2 + 2x on [−1, 0) and 2 − 2x on [0, 1).  sign(0) = 0 (torch's convention, kept for bit-faithfulness with
    the upstream, which also uses ``torch.sign``); an exact zero has measure zero after the learnable TaR shift.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad * (2 - 2 * x.abs()).clamp_min(0)


def binarize_weight(w: torch.Tensor) -> torch.Tensor:
    """α ⊙ sign(W) with α_o = mean|W_o| over each output channel's weights (no autograd bookkeeping)."""
    return torch.sign(w) * w.abs().mean(dim=tuple(range(1, w.dim())), keepdim=True)


class BinaryWeight(torch.autograd.Function):
    """W_b = α ⊙ sign(W), α_o = mean|W_o| per output channel (no gradient); straight-through clamp(W, −1, 1) backward.

    The weight gradient is the incoming gradient where |W| ≤ 1 and 0 elsewhere.  sign(0) = 0, as for activations
    (upstream-faithful): a latent weight that is exactly 0.0 — float32 uniform init does produce a few among 48 M —
    binarises to 0, not ±α.
    """

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w.abs() <= 1)
        return binarize_weight(w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype)


class BinaryConv2d(nn.Conv2d):
    """Bias-free stride-1 conv whose weight is binarised to ±α per output channel (``binary=False``: the latent FP
    weight is used as is).  Its input is expected to be already binarised (see :class:`BIConv`).

    Inside :func:`frozen_binary_weights` the binarised weight is computed once and reused (inference only).
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, binary: bool = True):
        super().__init__(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        self.binary = binary
        self.frozen_weight: torch.Tensor | None = None

    def effective_weight(self) -> torch.Tensor:
        """The weight the convolution uses: α ⊙ sign(W) when binary, else W."""
        if not self.binary:
            return self.weight
        if self.frozen_weight is not None:
            return self.frozen_weight
        if torch.is_grad_enabled() and self.weight.requires_grad:
            return BinaryWeight.apply(self.weight)
        return binarize_weight(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), None, padding=self.padding)


@contextlib.contextmanager
def frozen_binary_weights(model: nn.Module):
    """Binarise every BinaryConv2d weight of ``model`` once on entry and reuse it until exit (inference only: the
    frozen weights carry no gradient and ignore weight updates made inside the block).  Deployed BNNs store
    pre-binarised weights, so this is also the faithful way to time the simulated network; it costs one extra copy
    of the binarised weights in memory."""
    convs = [m for m in model.modules() if isinstance(m, BinaryConv2d) and m.binary]
    try:
        with torch.no_grad():
            for m in convs:
                m.frozen_weight = binarize_weight(m.weight)
        yield model
    finally:
        for m in convs:
            m.frozen_weight = None


def _pick(table: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Row k of a (groups, C) table as (1, C, 1, 1); a one-row table is used for every group."""
    row = table[:1] if table.shape[0] == 1 else table.index_select(0, k)
    return row.reshape(1, -1, 1, 1)


class BIConv(nn.Module):
    """BI-Conv block: x_r = x + b_k (TaR); y = conv(sign(x_r), α⊙sign(W)); z = PReLU_k(y + β_k) + ζ_k (TaA); z + x.

    The full-precision shortcut is x itself (cin = cout) or, for the [assumed] concat fusion (cin = 2·cout), the sum of
    the two input halves.  ``tar_groups`` / ``taa_groups`` rows are selected by the timestep group k.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int, tar_groups: int = 5, taa_groups: int = 5,
                 binary: bool = True):
        super().__init__()
        if cin not in (cout, 2 * cout):
            raise ValueError(f"BIConv needs in = out channels (or in = 2·out for concat fusion), got {cin} → {cout}")
        self.binary = binary
        self.tar = nn.Parameter(torch.zeros(tar_groups, cin))  # TaR shifts b_k
        self.conv = BinaryConv2d(cin, cout, kernel_size, binary=binary)
        self.taa_bias0 = nn.Parameter(torch.zeros(taa_groups, cout))  # TaA β_k
        self.taa_slope = nn.Parameter(torch.full((taa_groups, cout), 0.25))  # TaA PReLU slopes (torch's init)
        self.taa_bias1 = nn.Parameter(torch.zeros(taa_groups, cout))  # TaA ζ_k

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        a = x + _pick(self.tar, k)
        if self.binary:
            a = ApproxSign.apply(a)
        y = self.conv(a) + _pick(self.taa_bias0, k)
        z = F.prelu(y, _pick(self.taa_slope, k).reshape(-1)) + _pick(self.taa_bias1, k)
        if x.shape[1] == z.shape[1]:
            return z + x
        c = z.shape[1]
        return z + x[:, :c] + x[:, c:]


# ----------------------------------------------------------------------------------------------------- building blocks
class _Conv(nn.Module):
    """A BI-Conv block (binarised) or a plain conv with bias (full precision), both called as ``conv(x, k)``."""

    def __init__(self, cin: int, cout: int, kernel_size: int, binarised: bool, tar_groups: int, taa_groups: int,
                 binary: bool):
        super().__init__()
        self.op = (BIConv(cin, cout, kernel_size, tar_groups, taa_groups, binary) if binarised
                   else nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2))

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.op(x, k) if isinstance(self.op, BIConv) else self.op(x)


class ResBlock(nn.Module):
    """h = Conv(Swish(GN x)); h += Linear(Swish(t_emb)); h = Conv(Dropout(Swish(GN h))); out = h + x (in = out)."""

    def __init__(self, c: int, emb_dim: int, norm_groups: int, dropout: float, binarised: bool, **conv_kw):
        super().__init__()
        self.norm1 = nn.GroupNorm(norm_groups, c)
        self.conv1 = _Conv(c, c, 3, binarised, **conv_kw)
        self.time = nn.Linear(emb_dim, c)
        self.norm2 = nn.GroupNorm(norm_groups, c)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _Conv(c, c, 3, binarised, **conv_kw)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), k)
        h = h + self.time(F.silu(emb)).to(h.dtype)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))), k)
        return h + x


class CPDown(nn.Module):
    """CP-Down(c): BI-Conv3×3(X1) + BI-Conv3×3(X2) on the channel halves (c/2 each), PixelUnshuffle(2) → 2c at H/2."""

    def __init__(self, c: int, **conv_kw):
        super().__init__()
        self.conv1 = BIConv(c // 2, c // 2, 3, **conv_kw)
        self.conv2 = BIConv(c // 2, c // 2, 3, **conv_kw)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return F.pixel_unshuffle(self.conv1(x1, k) + self.conv2(x2, k), 2)


class CPUp(nn.Module):
    """CP-Up(c): concat(BI-Conv3×3(X), BI-Conv3×3(X)) (c → c each), PixelShuffle(2) → c/2 at 2H."""

    def __init__(self, c: int, **conv_kw):
        super().__init__()
        self.conv1 = BIConv(c, c, 3, **conv_kw)
        self.conv2 = BIConv(c, c, 3, **conv_kw)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(torch.cat([self.conv1(x, k), self.conv2(x, k)], dim=1), 2)


class Fusion(nn.Module):
    """Skip fusion 2c → c of A (decoder) and B (skip).  "cs" (CS-Fusion): F1 = [A odd, B even], F2 = [A even, B odd],
    out = Conv1×1(F1) + Conv1×1(F2); "split": Conv1×1(A) + Conv1×1(B); "concat": Conv1×1([A, B]) (2c → c).
    Binarised convs are BI-Conv blocks; full-precision ones plain 1×1 convs with bias (no inner shortcut)."""

    def __init__(self, c: int, mode: str, binarised: bool, **conv_kw):
        super().__init__()
        self.mode = mode
        if mode == "concat":
            self.convs = nn.ModuleList([_Conv(2 * c, c, 1, binarised, **conv_kw)])
        else:
            self.convs = nn.ModuleList([_Conv(c, c, 1, binarised, **conv_kw) for _ in range(2)])

    def forward(self, a: torch.Tensor, b: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.mode == "concat":
            return self.convs[0](torch.cat([a, b], dim=1), k)
        if self.mode == "cs":
            a, b = torch.cat([a[:, 1::2], b[:, 0::2]], dim=1), torch.cat([a[:, 0::2], b[:, 1::2]], dim=1)
        return self.convs[0](a, k) + self.convs[1](b, k)


class SelfAttention(nn.Module):
    """Full-precision single-head global self-attention: x + out(SDPA(qkv(GN x))), bias-free 1×1 qkv, 1×1 out."""

    def __init__(self, c: int, norm_groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, c)
        self.qkv = nn.Conv2d(c, 3 * c, 1, bias=False)
        self.out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # The 1×1 convs applied as linears on (B, N, C) tokens (same parameters and MACs), so that q, k, v have unit
        # stride on the channel axis, as the fused SDPA kernels want.  [q | k | v] along the output channels.
        tokens = self.norm(x).flatten(2).transpose(1, 2)
        q, key, v = F.linear(tokens, self.qkv.weight[:, :, 0, 0]).unsqueeze(1).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(q, key, v).squeeze(1)  # scale 1/sqrt(C): one head of C channels
        out = F.linear(out, self.out.weight[:, :, 0, 0], self.out.bias)
        return x + out.transpose(1, 2).reshape(b, c, h, w)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the raw (integer) timestep: [sin | cos] with frequencies exp(−ln(1e4)·i/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(1e4) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def timestep_group(t: torch.Tensor, groups: int = 5, total_step: int = T_MAX) -> torch.Tensor:
    """TaR/TaA group of the batch, k = clamp(⌊t₀·K/T⌋, 0, K−1) from the first timestep, as a (1,) long tensor.

    Pure tensor ops (no ``.item()``), so it also runs on the meta device.
    """
    t0 = t.reshape(-1)[:1]
    k = torch.floor(t0.double() * groups / total_step).long() if t0.dtype.is_floating_point \
        else t0.long() * groups // total_step
    return k.clamp(0, groups - 1)


def _at_level(module: nn.Module, level: int) -> nn.Module:
    """Tag every conv in ``module`` with the U-Net level whose resolution it runs at (for the analytic cost)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.level = level
    return module


# ----------------------------------------------------------------------------------------------------- the U-Net
class BIDiffSRUNet(nn.Module):
    """BI-DiffSR U-Net (docs/seed-systems.md §4.3) with the qdm-bench adapter: ``model(x_t, t, lq, mask=None)`` → ε."""

    space = "pixel"
    pred_type = "eps"
    t_convention = "ddpm"  # integer DDPM timestep in [0, total_step)
    requires_uniform_t_in_batch = True

    def __init__(
        self,
        in_channels: int = 3,
        lq_channels: int = 3,
        out_channels: int = 3,
        inner_channel: int = 64,
        channel_mults: Sequence[int] = (1, 2, 4, 8),
        res_blocks: int = 2,
        norm_groups: int = 16,
        dropout: float = 0.2,
        image_size: int = 256,
        fp_res: Sequence[int] = (256, 128),
        total_step: int = T_MAX,
        K: int = 5,
        tar: bool = True,
        taa: bool = True,
        fusion: str = "cs",
        binary_mode: str = "simulated",
    ):
        super().__init__()
        if binary_mode not in BINARY_MODES:
            raise ValueError(f"binary_mode must be one of {BINARY_MODES}, got {binary_mode!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if isinstance(K, bool) or not isinstance(K, int) or K < 1:
            raise ValueError(f"K (timestep groups) must be a positive integer, got {K!r}")
        mults = list(channel_mults)
        if any(b != 2 * a for a, b in zip(mults, mults[1:])):
            raise ValueError(f"channel_mults must double from level to level (CP-Down/Up), got {channel_mults!r}")
        levels = len(mults)
        self.config = dict(
            in_channels=in_channels, lq_channels=lq_channels, out_channels=out_channels, inner_channel=inner_channel,
            channel_mults=tuple(mults), res_blocks=res_blocks, norm_groups=norm_groups, dropout=dropout,
            image_size=image_size, fp_res=tuple(fp_res), total_step=total_step, K=K, tar=tar, taa=taa, fusion=fusion,
            binary_mode=binary_mode,
        )
        self.inner_channel, self.total_step, self.K = inner_channel, total_step, K
        self.input_multiple = 2 ** (levels - 1)
        self.binary = binary_mode == "simulated"
        kw = dict(tar_groups=K if tar else 1, taa_groups=K if taa else 1, binary=self.binary)
        emb = inner_channel

        self.time_mlp = nn.Sequential(nn.Linear(emb, 4 * emb), nn.SiLU(), nn.Linear(4 * emb, emb))
        self.stem = _at_level(nn.Conv2d(in_channels + lq_channels, inner_channel, 3, padding=1), 0)

        def res(c: int, level: int, binarised: bool = True) -> nn.Module:
            return _at_level(ResBlock(c, emb, norm_groups, dropout, binarised, **kw), level)

        self.encoder = nn.ModuleList()
        skips = [inner_channel]
        for level, mult in enumerate(mults):
            c = inner_channel * mult
            for _ in range(res_blocks):
                self.encoder.append(res(c, level))
                skips.append(c)
            if level < levels - 1:
                self.encoder.append(_at_level(CPDown(c, **kw), level))
                skips.append(2 * c)

        c = inner_channel * mults[-1]
        self.middle = nn.ModuleList([
            res(c, levels - 1), _at_level(SelfAttention(c, norm_groups), levels - 1), res(c, levels - 1),
        ])

        self.decoder = nn.ModuleList()
        for level in reversed(range(levels)):
            c = inner_channel * mults[level]
            binarised = image_size // 2 ** level not in self.config["fp_res"]
            for _ in range(res_blocks + 1):
                if skips.pop() != c:  # pragma: no cover - guaranteed by the doubling check
                    raise AssertionError("skip channels do not match the decoder level")
                self.decoder.append(_at_level(Fusion(c, fusion, binarised, **kw), level))
                self.decoder.append(res(c, level, binarised))
            if level > 0:
                self.decoder.append(_at_level(CPUp(c, **kw), level))

        self.head_norm = nn.GroupNorm(norm_groups, inner_channel)
        self.head = _at_level(nn.Conv2d(inner_channel, out_channels, 3, padding=1), 0)

    # -- network
    def denoise(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The U-Net on its native input: concat(condition, x_t) (B, 6, H, W), H and W multiples of 8; t (B,)."""
        k = timestep_group(t, self.K, self.total_step)
        emb = self.time_mlp(timestep_embedding(t, self.inner_channel).to(x.dtype))
        h = self.stem(x)
        skips = [h]
        for block in self.encoder:
            h = block(h, emb, k)
            skips.append(h)
        for block in self.middle:
            h = block(h, emb, k)
        for block in self.decoder:
            h = block(h, skips.pop(), k) if isinstance(block, Fusion) else block(h, emb, k)
        return self.head(F.silu(self.head_norm(h)))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, lq: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """ε prediction (B, 3, H, W) for x_t (B, 3, H, W) in the [0, 1]-data DDPM space, DDPM timesteps t (B,), and the
        LR image lq in [-1, 1] (LR or HR size); ``mask`` is ignored.  Raises ValueError for a mixed-t batch."""
        b, _, height, width = x_t.shape
        t = t.reshape(-1)
        t = t.expand(b) if t.numel() == 1 else t
        if t.numel() != b:
            raise ValueError(f"bi-diffsr got {t.numel()} timesteps for a batch of {b}; pass t of shape ({b},)")
        if not t.is_meta and b > 1 and bool((t != t[:1]).any()):
            raise ValueError(f"bi-diffsr needs one timestep for the whole batch (its TaR/TaA group comes from t[0]), "
                             f"got t = {t.tolist()}; call the model once per distinct t")
        if lq.shape[-2:] != x_t.shape[-2:]:
            if lq.shape[-2] > height or lq.shape[-1] > width:
                raise ValueError(f"bi-diffsr: lq {tuple(lq.shape)} is larger than x_t {tuple(x_t.shape)}; pass the "
                                 "LR image or its bicubic upsampling to x_t's size")
            lq = F.interpolate(lq, size=(height, width), mode="bicubic", align_corners=False)
        dtype = self.stem.weight.dtype
        x = torch.cat([(lq.to(dtype) + 1) / 2, x_t.to(dtype)], dim=1)
        m = self.input_multiple
        pad_h, pad_w = -height % m, -width % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        return self.denoise(x, t)[:, :, :height, :width].to(x_t.dtype)

    # -- cost
    def param_counts(self) -> dict[str, int]:
        """Binarised weights, FP parameters (incl. TaR and TaA), their total (the FP-equivalent count) and the paper's
        deployed count binary/32 + FP (``paper``; 4,575,043 for the released configuration)."""
        total = sum(p.numel() for p in self.parameters())
        binary = sum(m.weight.numel() for m in self.modules() if isinstance(m, BinaryConv2d) and m.binary)
        tar = sum(m.tar.numel() for m in self.modules() if isinstance(m, BIConv))
        taa = sum(m.taa_bias0.numel() + m.taa_slope.numel() + m.taa_bias1.numel()
                  for m in self.modules() if isinstance(m, BIConv))
        return {"params_fp_equiv": total, "binary_params": binary, "fp_params": total - binary, "tar_params": tar,
                "taa_params": taa, "paper": binary // 32 + (total - binary) if binary % 32 == 0 else None}

    def prepare_inference(self) -> None:
        """Binarise the weights once for timing (as a deployed BNN stores them); undo with ``frozen_binary_weights``."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, BinaryConv2d) and m.binary:
                    m.frozen_weight = binarize_weight(m.weight)

    def cost_extras(self, height: int, width: int, batch: int = 1) -> dict[str, float | int]:
        """Binary-network accounting of one evaluation at output size H×W (docs/seed-systems.md §4.4), computed analytically.

        The network runs at H, W rounded up to multiples of 8 (the adapter's padding).  ``bops``: MACs of the
        binarised convs (binary operations); ``fp_macs``: FP convs (incl. attention qkv/out) + attention matmuls
        + linears; ``macs_simulated`` = bops + fp_macs (what a float MAC counter sees); ``ops`` = fp_macs + bops/64;
        ``params_deploy`` = binary_params/32 + fp_params (a float).  In ``binary_mode="fp"`` nothing is binarised.
        ``notes``: what a measurement row should say about these numbers (binarised networks only).
        """
        m = self.input_multiple
        hp, wp = -(-height // m) * m, -(-width // m) * m
        bops = fp_conv = attn_conv = attention = 0
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                macs = mod.weight.numel() * (hp >> mod.level) * (wp >> mod.level)
                if isinstance(mod, BinaryConv2d) and mod.binary:
                    bops += macs
                else:
                    fp_conv += macs
            if isinstance(mod, SelfAttention):
                n = (hp >> mod.qkv.level) * (wp >> mod.qkv.level)
                attn_conv += (mod.qkv.weight.numel() + mod.out.weight.numel()) * n
                attention += 2 * n * n * mod.out.weight.shape[0]  # QKᵀ and AV
        linear = sum(mod.weight.numel() for mod in self.modules() if isinstance(mod, nn.Linear))
        bops, fp_conv, attn_conv, linear, attention = (v * batch for v in (bops, fp_conv, attn_conv, linear,
                                                                            attention))
        fp_macs = fp_conv + attention + linear
        params = self.param_counts()
        return {
            "bops": bops, "fp_macs": fp_macs, "fp_conv_macs": fp_conv, "attention_conv_macs": attn_conv,
            "attention_macs": attention, "linear_macs": linear, "macs_simulated": bops + fp_macs,
            "ops": fp_macs + bops / 64, **params,
            "params_deploy": params["binary_params"] / 32 + params["fp_params"],
            "notes": [SIMULATED_NOTE] if bops else [],
        }

    cost = cost_extras  # the docs/seed-systems.md §1.1 name


BI_DIFFSR_CFG = dict(
    in_channels=3, lq_channels=3, out_channels=3, inner_channel=64, channel_mults=(1, 2, 4, 8), res_blocks=2,
    norm_groups=16, dropout=0.2, image_size=256, fp_res=(256, 128), total_step=T_MAX, K=5, tar=True, taa=True,
    fusion="cs", binary_mode="simulated",
)


def bi_diffsr(**kwargs) -> BIDiffSRUNet:
    """BI-DiffSR binarised U-Net (1-bit convs, TaR/TaA, K = 5); 4,575,043 deployed / 51,280,387 FP-equivalent params."""
    return BIDiffSRUNet(**{**BI_DIFFSR_CFG, **kwargs})


def bi_diffsr_fp(**kwargs) -> BIDiffSRUNet:
    """BI-DiffSR's full-precision counterpart: the same network without binarisation (51,280,387 FP parameters)."""
    return BIDiffSRUNet(**{**BI_DIFFSR_CFG, "binary_mode": "fp", **kwargs})
