"""Measurement: cells, the one validation layer, the core and its plugins, results files, the runner."""
