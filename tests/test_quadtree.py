"""Tests of qdm.quadtree against independent oracles (docs/qdm.md §2 and §12)."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qdm.quadtree import (
    QuadLeaf,
    QuadtreeWarning,
    active_windows,
    block_ranges,
    density,
    leaves_to_mask,
    pipeline_masks,
    quadtree_decompose,
    quadtree_level,
    quadtree_mask,
    random_window_mask,
    window_density,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------------------------ oracles

def oracle_level(h: int, w: int, hm: int, wm: int) -> int:
    """Spec §2.2, written out with explicit truncation toward zero."""
    def trunc_log2(r: float) -> int:
        v = math.log2(r)
        return math.floor(v) if v >= 0 else math.ceil(v)
    return max(trunc_log2(h / hm), trunc_log2(w / wm), 1)


def oracle_ranges(img: torch.Tensor, k: int) -> list[list[list[float]]]:
    """Per-block mean-over-channel (max - min), computed with plain Python loops over blocks and channels."""
    b, c, h, w = img.shape
    vals = img.double().tolist()
    out = []
    for n in range(b):
        rows = []
        for by in range(h // k):
            row = []
            for bx in range(w // k):
                total = 0.0
                for ch in range(c):
                    block = [vals[n][ch][y][x] for y in range(by * k, by * k + k) for x in range(bx * k, bx * k + k)]
                    total += max(block) - min(block)
                row.append(total / c)
            rows.append(row)
        out.append(rows)
    return out


def oracle_mask(img: torch.Tensor, hm: int, wm: int, s: float, mode: str) -> torch.Tensor:
    """Brute-force Algorithm 1 (reference rule): block loop, threshold, integer nearest-neighbour resize."""
    b, _, h, w = img.shape
    k = 2 ** oracle_level(h, w, hm, wm)
    ranges = oracle_ranges(img, k)
    ph, pw = h // k, w // k
    out = torch.zeros(b, hm, wm, dtype=torch.float64)
    for n in range(b):
        for i in range(hm):
            for j in range(wm):
                r = ranges[n][(i * ph) // hm][(j * pw) // wm]
                out[n, i, j] = float(r > s if mode == "paper" else r >= s)
    return out


def quantized_images(gen: torch.Generator, b: int, c: int, h: int, w: int, dtype=torch.float64) -> torch.Tensor:
    """Images in [-1, 1] on a 1/8 grid with constant 2x2 and 4x4 patches mixed in, so that ties and zeros occur."""
    img = torch.randint(-8, 9, (b, c, h, w), generator=gen).to(dtype) / 8
    flat = torch.randint(-8, 9, (b, c, 1, 1), generator=gen).to(dtype) / 8
    keep = torch.rand(b, 1, h, w, generator=gen) < 0.5
    # Replace roughly half the pixels with a per-image constant, giving many constant blocks.
    return torch.where(keep, img, flat.expand_as(img))


def interesting_thresholds(img: torch.Tensor, k: int, gen: torch.Generator) -> list[float]:
    """0, a random value, and values equal to actual block ranges (ties distinguish > from >=)."""
    ranges = sorted({r for plane in oracle_ranges(img, k) for row in plane for r in row})
    picks = [ranges[i] for i in torch.randint(0, len(ranges), (3,), generator=gen).tolist()]
    return [0.0, float(torch.rand(1, generator=gen)) * 2, *picks]


# ---------------------------------------------------------------------------------------------------------- level

@pytest.mark.parametrize("h,w,hm,wm,level", [
    (128, 128, 128, 128, 1),   # realsr/medx4 diffusion mask: ratio 1 clamped to 1
    (128, 128, 64, 64, 1),     # model mask: ratio 2
    (64, 64, 128, 128, 1),     # medx8 diffusion mask: ratio 0.5, int(-1) = -1, clamped to 1
    (64, 64, 64, 64, 1),       # medx8 model mask
    (128, 128, 8, 8, 4),       # training model mask: ratio 16
    (12, 12, 4, 4, 1),         # int(log2 3) = 1
    (128, 64, 32, 32, 2),      # max over the two axes
    (64, 128, 32, 8, 4),
    (100, 100, 3, 3, 5),       # int(log2 33.3) = 5
    (1024, 1024, 1, 1, 10),
    (5, 5, 7, 7, 1),
])
def test_quadtree_level_values(h, w, hm, wm, level):
    assert quadtree_level(h, w, hm, wm) == level == oracle_level(h, w, hm, wm)


@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 300), st.integers(1, 300))
@settings(max_examples=200, deadline=None)
def test_quadtree_level_matches_truncation_rule(h, w, hm, wm):
    assert quadtree_level(h, w, hm, wm) == oracle_level(h, w, hm, wm)


def test_quadtree_level_rejects_non_positive():
    with pytest.raises(ValueError, match="positive integer"):
        quadtree_level(0, 8, 4, 4)


# ---------------------------------------------------------------------------------------------- brute-force oracle

SIZES = [
    ((16, 16), (8, 8)),      # power of two, k = 2
    ((16, 16), (16, 16)),    # ratio 1, nearest x2
    ((8, 8), (32, 32)),      # ratio 1/4, l clamped to 1, nearest x8
    ((32, 16), (4, 4)),      # non-square: k = 8 from the H axis, pooled 4x2, nearest x2 along W
    ((16, 32), (8, 4)),      # non-square, non-square mask
    ((12, 12), (4, 4)),      # non-power-of-two ratio: pooled 6x6, rows 2 and 5 skipped
    ((7, 9), (7, 9)),        # odd sizes: remainder row/column dropped, uneven stretch
    ((20, 12), (5, 6)),
    ((24, 40), (6, 10)),
    ((13, 31), (3, 5)),
]


@pytest.mark.parametrize("mode", ["paper", "reference"])
@pytest.mark.parametrize("hw,size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_mask_matches_brute_force(hw, size, mode, channels):
    gen = torch.Generator().manual_seed(hash((hw, size, channels)) % 2**31)
    img = quantized_images(gen, 2, channels, *hw)
    k = 2 ** oracle_level(*hw, *size)
    for s in interesting_thresholds(img, k, gen):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", QuadtreeWarning)
            got = quadtree_mask(img, size, s, mode)
        assert got.shape == (2, *size)
        assert torch.equal(got, oracle_mask(img, *size, s, mode)), (hw, size, s, mode)


@pytest.mark.parametrize("hw,k", [((16, 16), 2), ((16, 24), 4), ((13, 7), 3), ((9, 9), 9)])
def test_block_ranges_match_brute_force(hw, k):
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(3, 3, *hw, generator=gen, dtype=torch.float64) * 2 - 1
    got = block_ranges(img, k)
    assert got.shape == (3, hw[0] // k, hw[1] // k)
    assert torch.allclose(got, torch.tensor(oracle_ranges(img, k), dtype=torch.float64), rtol=0, atol=1e-12)


def test_block_range_lies_in_0_2():
    img = torch.tensor([[-1.0, 1.0], [1.0, -1.0]]).expand(1, 3, 2, 2)
    assert block_ranges(img, 2).item() == 2.0
    assert quadtree_mask(img, 1, 1.999).item() == 1.0
    assert quadtree_mask(img, 1, 2.0).item() == 0.0
    assert quadtree_mask(img, 1, 2.0, mode="reference").item() == 1.0


# ----------------------------------------------------------------------------------- recursive quadtree oracle (§2.3)

@st.composite
def piecewise_images(draw):
    """Random rectangles of constant colour on a power-of-two canvas, optionally with noise on some of them."""
    hp = draw(st.integers(3, 6))
    wp = draw(st.sampled_from([hp, hp, hp - 1, hp + 1]))
    h, w = 2 ** hp, 2 ** min(max(wp, 3), 6)
    c = draw(st.sampled_from([1, 2, 3]))
    seed = draw(st.integers(0, 2**31 - 1))
    gen = torch.Generator().manual_seed(seed)
    level = lambda *shape: torch.randint(-8, 9, shape, generator=gen).double() / 8  # noqa: E731
    img = level(c, 1, 1).expand(c, h, w).clone()
    for _ in range(draw(st.integers(0, 6))):
        y0, y1 = sorted(torch.randint(0, h + 1, (2,), generator=gen).tolist())
        x0, x1 = sorted(torch.randint(0, w + 1, (2,), generator=gen).tolist())
        noisy = draw(st.booleans())
        patch = level(c, y1 - y0, x1 - x0) if noisy else level(c, 1, 1).expand(c, y1 - y0, x1 - x0)
        img[:, y0:y1, x0:x1] = patch
    if draw(st.integers(0, 9)) == 0:  # occasionally pure noise
        img = level(c, h, w)
    return img


@given(piecewise_images(), st.data(), st.sampled_from(["paper", "reference"]))
@FAST
def test_algorithm1_equals_recursive_quadtree(img, data, mode):
    c, h, w = img.shape
    k = data.draw(st.sampled_from([2 ** i for i in range(1, int(math.log2(min(h, w))) + 1)]))
    # Thresholds in [0, 2] on the grid of possible ranges (ties included) or arbitrary.
    s = data.draw(st.one_of(st.integers(0, 48 * c).map(lambda i: i / (8 * c)), st.floats(0, 2)))
    got = quadtree_mask(img[None], (h // k, w // k), s, mode)[0]
    leaves = quadtree_decompose(img, s, min_size=k, mode=mode)
    assert torch.equal(got, leaves_to_mask(leaves, h, w, k).double())


def test_decompose_leaves_tile_the_image():
    gen = torch.Generator().manual_seed(3)
    img = quantized_images(gen, 1, 3, 24, 40)[0]  # roots: 8x8 squares, 3 x 5 of them
    leaves = quadtree_decompose(img, 0.3, min_size=2)
    cover = torch.zeros(24, 40, dtype=torch.int64)
    for leaf in leaves:
        assert isinstance(leaf, QuadLeaf) and leaf.h == leaf.w == 8 // 2 ** leaf.depth
        cover[leaf.y:leaf.y + leaf.h, leaf.x:leaf.x + leaf.w] += 1
        assert leaf.active == (leaf.h == 2 and block_ranges(img[None, :, leaf.y:leaf.y + 2, leaf.x:leaf.x + 2], 2)
                               .item() > 0.3)
    assert torch.equal(cover, torch.ones_like(cover))


def test_decompose_constant_image_is_one_leaf_per_root():
    leaves = quadtree_decompose(torch.zeros(3, 16, 32), 0.0, min_size=2)
    assert leaves == [QuadLeaf(0, 0, 16, 16, 0, False), QuadLeaf(0, 16, 16, 16, 0, False)]
    ref = quadtree_decompose(torch.zeros(3, 16, 32), 0.0, min_size=2, mode="reference")
    assert len(ref) == 2 * 64 and all(leaf.active and leaf.depth == 3 for leaf in ref)


def test_decompose_rejects_bad_sizes():
    with pytest.raises(ValueError, match="not a multiple of min_size"):
        quadtree_decompose(torch.zeros(1, 10, 8), 0.1, min_size=4)
    with pytest.raises(ValueError, match=r"3-D \(C, H, W\)"):
        quadtree_decompose(torch.zeros(1, 1, 8, 8), 0.1)


# ----------------------------------------------------------------------------------- threshold semantics and density

def test_constant_image_strict_vs_reference_at_zero():
    img = torch.full((2, 3, 32, 32), 0.25)
    assert density(quadtree_mask(img, 16, 0.0)).tolist() == [0.0, 0.0]
    assert density(quadtree_mask(img, 16, 0.0, mode="reference")).tolist() == [1.0, 1.0]
    assert density(quadtree_mask(img, 16, 1e-6, mode="reference")).tolist() == [0.0, 0.0]


def test_constant_blocks_lossless_mode():
    # 4x4 grid of 2x2 blocks; blocks on the diagonal are non-constant, the others constant (different constants).
    gen = torch.Generator().manual_seed(1)
    img = (torch.randint(-8, 9, (1, 3, 4, 4), generator=gen).double() / 8).repeat_interleave(2, -1).repeat_interleave(2, -2)
    for i in range(4):
        img[0, :, 2 * i, 2 * i] += 0.0625
    paper = quadtree_mask(img, 4, 0.0)
    assert torch.equal(paper[0], torch.eye(4, dtype=torch.float64))
    assert torch.equal(quadtree_mask(img, 4, 0.0, mode="reference"), torch.ones(1, 4, 4, dtype=torch.float64))


@given(piecewise_images(), st.floats(0, 2), st.floats(0, 2), st.sampled_from(["paper", "reference"]))
@FAST
def test_density_never_increases_with_threshold(img, s1, s2, mode):
    lo, hi = sorted((s1, s2))
    m_lo = quadtree_mask(img[None], (img.shape[1] // 2, img.shape[2] // 2), lo, mode)
    m_hi = quadtree_mask(img[None], (img.shape[1] // 2, img.shape[2] // 2), hi, mode)
    assert bool((m_hi <= m_lo).all())
    assert density(m_hi).item() <= density(m_lo).item()
    # The strict mode never selects more than the reference mode at the same threshold.
    assert bool((quadtree_mask(img[None], 4, lo, "paper") <= quadtree_mask(img[None], 4, lo, "reference")).all())


def test_density_values():
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]]])
    assert density(mask).tolist() == [0.25, 0.75]
    assert density(mask.bool()).dtype == torch.float32
    assert density(mask[:, None]).tolist() == [0.25, 0.75]  # any trailing dims


# ------------------------------------------------------------------------------------------- worked cases of §2.4

def test_realsr_x4_lr128_latent128():
    gen = torch.Generator().manual_seed(5)
    lr = torch.rand(2, 3, 128, 128, generator=gen) * 2 - 1
    lr[:, :, :64] = 0.0  # top half flat
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # power-of-two ratios never warn
        diff, model = pipeline_masks(lr, (128, 128), 0.15)
    assert diff.shape == (2, 1, 128, 128) and model.shape == (2, 64, 64)
    bits = (block_ranges(lr, 2) > 0.15).float()  # l = 1, k = 2, pooled 64x64
    assert torch.equal(model, bits)
    assert torch.equal(diff[:, 0], bits.repeat_interleave(2, 1).repeat_interleave(2, 2))
    assert model[:, :32].sum() == 0 and model[:, 32:].sum() > 0


def test_medx8_lr64_latent128():
    gen = torch.Generator().manual_seed(6)
    lr = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    lr[:, :, :, 32:] = -1.0
    assert quadtree_level(64, 64, 128, 128) == 1 and quadtree_level(64, 64, 64, 64) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diff, model = pipeline_masks(lr, 128, 0.0)
    bits = (block_ranges(lr, 2) > 0).float()  # pooled 32x32
    assert torch.equal(diff[:, 0], bits.repeat_interleave(4, 1).repeat_interleave(4, 2))  # nearest x4
    assert torch.equal(model, bits.repeat_interleave(2, 1).repeat_interleave(2, 2))  # nearest x2 to 64x64
    assert model[..., 32:].sum() == 0


def test_training_model_mask_one_bit_per_window():
    lr = torch.zeros(1, 3, 128, 128)
    lr[0, :, 16:32, 48:64] = torch.linspace(-1, 1, 16 * 16).view(16, 16)
    mask = quadtree_mask(lr, 8, 0.0)
    expected = torch.zeros(1, 8, 8)
    expected[0, 1, 3] = 1
    assert torch.equal(mask, expected)


def test_non_power_of_two_12_to_4_warns_and_skips_rows():
    gen = torch.Generator().manual_seed(7)
    img = quantized_images(gen, 1, 3, 12, 12)
    with pytest.warns(QuadtreeWarning, match=r"4 of 12 LR rows and 4 of 12 LR columns are not inspected"):
        mask = quadtree_mask(img, 4, 0.1)
    keep = torch.tensor([0, 1, 3, 4])
    assert torch.equal(mask, (block_ranges(img, 2) > 0.1)[:, keep][:, :, keep].double())


@pytest.mark.parametrize("hw,size,fragment", [
    ((7, 7), (7, 7), "1 of 7 LR rows and 1 of 7 LR columns are not inspected"),
    ((12, 32), (6, 4), "4 of 12 LR rows and 0 of 32 LR columns are not inspected"),  # k = 8 from the W axis
    ((6, 6), (4, 4), "non-integer factor"),
])
def test_warning_messages(hw, size, fragment):
    with pytest.warns(QuadtreeWarning, match=fragment):
        quadtree_mask(torch.zeros(1, 1, *hw), size, 0.1)


@pytest.mark.parametrize("hw,size", [((128, 128), (128, 128)), ((64, 64), (128, 128)), ((128, 64), (32, 32)),
                                     ((6, 6), (9, 9)), ((48, 48), (3, 3))])
def test_no_warning_when_every_pixel_is_inspected(hw, size):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quadtree_mask(torch.zeros(1, 1, *hw), size, 0.1)


# ------------------------------------------------------------------------------------------------------- windows

def brute_active_windows(mask: torch.Tensor, win: int) -> torch.Tensor:
    b, gh, gw = mask.shape
    out = torch.zeros(b, gh // win, gw // win, dtype=torch.bool)
    for n in range(b):
        for i in range(gh // win):
            for j in range(gw // win):
                out[n, i, j] = any(mask[n, i * win + y, j * win + x] != 0 for y in range(win) for x in range(win))
    return out


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.sampled_from([1, 2, 4]), st.floats(0, 1),
       st.integers(0, 2**31 - 1))
@FAST
def test_active_windows_any_rule(b, nh, nw, win, p, seed):
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, nh * win, nw * win, generator=gen) < p * 0.1).float()
    got = active_windows(mask, win)
    assert got.dtype == torch.bool
    assert torch.equal(got, brute_active_windows(mask, win))
    assert torch.equal(window_density(mask, win), got.float().mean(dim=(1, 2)))
    assert bool((window_density(mask, win) >= density(mask)).all())


def test_active_windows_rejects_indivisible_grid():
    with pytest.raises(ValueError, match="not divisible by window 8"):
        active_windows(torch.zeros(1, 64, 60), 8)
    with pytest.raises(ValueError, match=r"3-D \(B, gh, gw\)"):
        active_windows(torch.zeros(1, 1, 64, 64), 8)


@pytest.mark.parametrize("d,count", [(0.0, 0), (1.0, 16), (0.5, 8), (0.3, 5), (0.01, 1), (0.999, 16)])
def test_random_window_mask_exact_density(d, count):
    gen = torch.Generator().manual_seed(0)
    mask = random_window_mask(3, 32, 32, 8, d, generator=gen)
    assert mask.shape == (3, 32, 32) and mask.dtype == torch.float32
    win = active_windows(mask, 8)
    assert win.sum(dim=(1, 2)).tolist() == [count] * 3
    # Selected windows are entirely ones, the others entirely zero.
    assert torch.equal(mask, win.float().repeat_interleave(8, 1).repeat_interleave(8, 2))
    assert torch.allclose(window_density(mask, 8), torch.full((3,), count / 16))


def test_random_window_mask_reproducible_and_varied():
    a = random_window_mask(4, 64, 32, 8, 0.25, generator=torch.Generator().manual_seed(11))
    b = random_window_mask(4, 64, 32, 8, 0.25, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b)
    assert len({tuple(m.flatten().tolist()) for m in a}) > 1  # samples differ


@pytest.mark.parametrize("d", [-0.1, 1.5, float("nan")])
def test_random_window_mask_rejects_density(d):
    with pytest.raises(ValueError, match=r"density must be in \[0, 1\]"):
        random_window_mask(1, 16, 16, 8, d)


def test_random_window_mask_rejects_indivisible_grid():
    with pytest.raises(ValueError, match="not divisible by window"):
        random_window_mask(1, 16, 12, 8, 0.5)


# ------------------------------------------------------------------------------------------------------ pipeline

@pytest.mark.parametrize("lr_hw,latent,model_hw", [((128, 128), (128, 128), (64, 64)),
                                                    ((64, 64), (128, 128), (64, 64)),
                                                    ((64, 96), (64, 96), (32, 48))])
def test_pipeline_masks_shapes(lr_hw, latent, model_hw):
    lr = torch.rand(2, 3, *lr_hw, dtype=torch.float64) * 2 - 1
    diff, model = pipeline_masks(lr, latent, 0.1)
    assert diff.shape == (2, 1, *latent) and model.shape == (2, *model_hw)
    assert diff.dtype == model.dtype == torch.float64
    full_d, full_m = pipeline_masks(lr, latent, None)
    assert full_d.shape == diff.shape and full_m.shape == model.shape
    assert bool((full_d == 1).all()) and bool((full_m == 1).all()) and full_d.dtype == torch.float64


def test_pipeline_masks_rejects_indivisible_latent():
    with pytest.raises(ValueError, match="not divisible by down_patch"):
        pipeline_masks(torch.zeros(1, 3, 32, 32), (33, 32), 0.1)


# ---------------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,fragments", [
    (dict(threshold=-0.1), ["non-negative", "[0, 2]"]),
    (dict(threshold=float("nan")), ["finite", "[0, 2]"]),
    (dict(threshold=float("inf")), ["finite"]),
    (dict(threshold=0.1, mode="strict"), ["unknown threshold mode", "'paper'", "'reference'"]),
    (dict(threshold=0.1, images=torch.zeros(1, 3, 8, 64), size=(1, 1)),  # k = 64 from the W axis, H = 8 < 64
     ["pooled grid would be empty", "kernel 64", "larger mask size"]),
    (dict(threshold=0.1, images=torch.zeros(3, 16, 16)), ["4-D", "unsqueeze(0)"]),
    (dict(threshold=0.1, images=torch.zeros(1, 3, 16, 16, dtype=torch.uint8)), ["floating-point"]),
    (dict(threshold=0.1, images=torch.zeros(1, 3, 1, 16)), ["pooled grid would be empty", "at least 2×2"]),
])
def test_bad_input_messages(kwargs, fragments):
    args = dict(images=torch.zeros(1, 3, 16, 16), size=(8, 8))
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        quadtree_mask(**args)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


# ------------------------------------------------------------------------------------------------- dtype / device

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_dtypes(dtype):
    gen = torch.Generator().manual_seed(9)
    img = quantized_images(gen, 2, 3, 32, 16, dtype=torch.float64)  # values exact in every dtype tested
    ref = quadtree_mask(img, (16, 8), 0.5)
    got = quadtree_mask(img.to(dtype), (16, 8), 0.5)
    assert got.dtype == dtype and got.device == img.device
    assert torch.equal(got.double(), ref)


def test_no_grad_needed():
    img = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_()
    mask = quadtree_mask(img, 8, 0.1)
    assert not mask.requires_grad
    assert not pipeline_masks(img, 16, 0.1)[0].requires_grad


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(10)
    img = quantized_images(gen, 2, 3, 64, 32, dtype=torch.float32)
    cpu = quadtree_mask(img, (32, 16), 0.25)
    gpu = quadtree_mask(img.cuda(), (32, 16), 0.25)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)
    gm = random_window_mask(2, 32, 32, 8, 0.5, generator=torch.Generator().manual_seed(0), device="cuda")
    assert gm.device.type == "cuda" and torch.equal(active_windows(gm, 8).sum(dim=(1, 2)).cpu(), torch.tensor([8, 8]))
