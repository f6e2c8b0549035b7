"""Baseline denoisers compared against QDM; importing this package registers them."""
from baselines import bi_diffsr, dit, dualdomain, swin_unet, unet  # noqa: F401
