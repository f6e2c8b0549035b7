"""Baseline denoisers compared against QDM; importing this package registers them."""
from baselines import dit  # noqa: F401
