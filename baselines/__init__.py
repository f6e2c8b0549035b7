"""Baseline denoisers compared against QDM; importing this package registers them."""
