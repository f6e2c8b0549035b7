"""qdm-bench: the measurement harness and CLI (a thin layer over :mod:`qdm` and :mod:`baselines`)."""
from qdm_bench.registry import create_model, example_inputs, list_models, model_info, register_model

__version__ = "0.1.0"
__all__ = ["create_model", "example_inputs", "list_models", "model_info", "register_model", "__version__"]
