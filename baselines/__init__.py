"""Baseline denoisers and efficient designs compared against QDM (stand-alone: no harness imports)."""
