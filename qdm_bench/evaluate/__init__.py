"""Evaluation: metrics, the quality plugin, training and checkpoints, the diffusion of each family, PGS glue."""
