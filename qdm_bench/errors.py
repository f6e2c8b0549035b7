"""User errors versus internal errors: what the CLI prints as one line, and how a bug is reported.

* A **user error** (:class:`UserError` and its kinds, a refused option, a model package refusing an input with
  ``ValueError``) is one line that names the problem and the fix; the exit status is non-zero.
* Anything else is an **internal error**: one line saying so, with the exception and where the full traceback
  was written; ``--debug`` (or ``QDM_BENCH_DEBUG=1``) prints the traceback itself.
"""
from __future__ import annotations

import datetime as _dt
import os
import tempfile
import traceback
from pathlib import Path

__all__ = ["UserError", "ConfigError", "ResultsError", "CheckpointError", "ImageError", "DEBUG_ENV", "EXTRAS",
           "is_user_error", "first_line", "write_traceback", "debug_enabled", "require"]

DEBUG_ENV = "QDM_BENCH_DEBUG"
_MODEL_PACKAGES = ("qdm", "baselines")


class UserError(ValueError):
    """A mistake in the user's input (an option, a file, a name): shown as one line, no traceback."""


class ConfigError(UserError):
    """An invalid option or combination of options, refused before any work starts."""


class ResultsError(UserError):
    """A results file that cannot be read or written."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable or made for another model."""


class ImageError(UserError):
    """An image, image set or folder that cannot be read."""


# optional module -> (package to install, qdm-bench extra that installs it); see pyproject.toml
EXTRAS: dict[str, tuple[str, str]] = {
    "skimage": ("scikit-image", "images"), "pydicom": ("pydicom", "images"),
    "torch_dct": ("torch-dct", "dualdomain"), "ptwt": ("ptwt", "dualdomain"), "fvcore": ("fvcore", "fvcore"),
    "submitit": ("submitit", "slurm"), "pyiqa": ("pyiqa", "quality"), "diffusers": ("diffusers", "latent"),
}


def require(module: str, purpose: str):
    """Import optional ``module`` (a key of :data:`EXTRAS`), or raise a one-line ConfigError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pkg, extra = EXTRAS[module]
        raise ConfigError(f"{purpose} needs {pkg}: pip install 'qdm-bench[{extra}]'") from None


def _raised_in_model_package(exc: BaseException) -> bool:
    """True when the innermost frame of ``exc`` is in qdm/ or baselines/ (their documented way of refusing input)."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    module = last.tb_frame.f_globals.get("__name__", "")
    return module.split(".")[0] in _MODEL_PACKAGES


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's mistake (one line) rather than a bug (internal error)."""
    from qdm_bench.registry import ModelError

    if isinstance(exc, (UserError, ModelError, FileNotFoundError, IsADirectoryError, PermissionError)):
        return True
    if isinstance(exc, ImportError) and "pip install" in str(exc):  # a missing optional package, named with its fix
        return True
    return isinstance(exc, ValueError) and _raised_in_model_package(exc)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when empty)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def debug_enabled() -> bool:
    """Whether tracebacks are printed (``QDM_BENCH_DEBUG`` set to anything but '', '0' or 'false')."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def write_traceback(exc: BaseException, folder: str | os.PathLike | None = None) -> Path:
    """Write the full traceback of ``exc`` to a new file (default: the temp folder) and return its path."""
    folder = Path(folder or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"qdm-bench-traceback-{stamp}-", suffix=".txt", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return Path(name)
