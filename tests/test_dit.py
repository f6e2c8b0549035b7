"""DiT baselines: published parameter counts, DiT-paper MACs, LR conditioning, shared blocks with QDM."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from baselines.dit import DIT_SIZES, DiT, DiTClassCond
from qdm.layers import DiTBlock
from qdm_bench import create_model

# docs/baselines.md §5.2: learnable parameters of the LR-conditioned DiT (6 channels in, 3 out), resolution independent.
LEARNABLE = {
    ("s", 2): 32_476_044, ("s", 4): 32_517_552, ("s", 8): 32_683_584,
    ("b", 2): 129_537_804, ("b", 4): 129_620_784, ("b", 8): 129_952_704,
    ("l", 2): 456_803_340, ("l", 4): 456_913_968, ("l", 8): 457_356_480,
    ("xl", 2): 673_667_724, ("xl", 4): 673_792_176, ("xl", 8): 674_289_984,
}
# docs/baselines.md §5.1 / §6.3: the official class-conditional DiT at 256 px (32×32×4 latent), totals incl. the frozen
# sin-cos table, and MACs measured on the reference; the DiT paper's "Gflops" (= MACs) for patch 2.
OFFICIAL = {
    ("s", 2): (32_963_360, 6.0557, 6.06), ("b", 2): (130_512_416, 23.0051, 23.01),
    ("l", 2): (458_102_816, 80.6976, 80.71), ("xl", 2): (675_129_632, 118.6214, 118.64),
    ("s", 4): (32_945_024, 1.4126, None), ("l", 8): (458_594_816, 5.0114, None),
}


@pytest.mark.parametrize("size,patch", list(LEARNABLE))
def test_lr_conditioned_learnable_parameters(size, patch):
    with torch.device("meta"):
        model = create_model(f"dit-{size}/{patch}")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == LEARNABLE[size, patch]


def test_learn_sigma_changes_only_the_final_linear():
    with torch.device("meta"):
        a, b = DiT(patch=8), DiT(patch=8, learn_sigma=True)
    diff = sum(p.numel() for p in b.parameters()) - sum(p.numel() for p in a.parameters())
    assert diff == 384 * 8 * 8 * 3 + 8 * 8 * 3  # weight + bias of the extra 3 output channels
    assert 32_757_504 == sum(p.numel() for p in b.parameters())  # docs/baselines.md §5.2, S/8 learn_sigma


@pytest.mark.parametrize("size,patch", list(OFFICIAL))
def test_official_class_conditional_parameters_and_macs(size, patch):
    total, macs_g, paper_g = OFFICIAL[size, patch]
    with torch.device("meta"):
        model = DiTClassCond(*DIT_SIZES[size], patch=patch)
        x, t = torch.empty(1, 4, 32, 32), torch.zeros(1)
        y = torch.zeros(1, dtype=torch.long)
    assert sum(p.numel() for p in model.parameters()) + model.frozen_table_size(32, 32) == total
    with FlopCounterMode(display=False) as counter:
        model(x, t, y)
    macs = counter.get_total_flops() / 2 / 1e9
    assert macs == pytest.approx(macs_g, abs=5e-5)
    if paper_g is not None:
        assert macs == pytest.approx(paper_g, rel=1e-3)


def test_dit_shares_qdm_blocks_and_conditions_on_lr():
    torch.manual_seed(0)
    model = DiT(depth=2, dim=64, heads=2, patch=4).double()
    assert isinstance(model.blocks[0], DiTBlock)
    for p in model.parameters():
        p.data.normal_(0, 0.1)
    x, lq = torch.randn(2, 3, 32, 48, dtype=torch.float64), torch.randn(2, 3, 16, 24, dtype=torch.float64)
    t = torch.tensor([0, 9])
    out = model(x, t, lq)
    assert out.shape == x.shape and out.dtype == x.dtype
    up = torch.nn.functional.interpolate(lq, size=(32, 48), mode="bicubic", align_corners=False)
    assert torch.equal(out, model(x, t, up))  # a smaller LR is bicubic-upsampled to x's size
    assert not torch.equal(out, model(x, t, up + 1))  # and it matters
    assert torch.equal(out, model(x, t, lq, mask=torch.ones(2, 16, 24)))  # the mask is ignored


def test_rejects_size_not_multiple_of_patch():
    model = DiT(depth=1, dim=32, heads=2, patch=8)
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.zeros(1, 3, 20, 16), torch.zeros(1), torch.zeros(1, 3, 20, 16))
