"""Baseline denoisers compared against QDM; importing this package registers them."""
from baselines import dit, swin_unet, unet  # noqa: F401
