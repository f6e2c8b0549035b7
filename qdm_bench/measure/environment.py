"""The environment of a measurement (device, software, git commit), autocast settings and out-of-memory detection."""
from __future__ import annotations

import contextlib
import functools
import datetime as _dt
import hashlib
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from qdm_bench.errors import ConfigError

__all__ = ["autocast_context", "environment_info", "is_oom", "DTYPES"]


# -- autocast ----------------------------------------------------------------------------------------------------

DTYPES: dict[str, torch.dtype | None] = {
    "fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}


def autocast_context(device: str | torch.device, dtype: str):
    """The autocast context for a cell: ``fp32`` → no autocast; ``bf16`` / ``fp16`` → ``torch.autocast``.

    Weights stay fp32; autocast runs eligible ops (linear, conv, matmul, SDPA) in the low precision.  fp16 autocast
    on CPU is refused (ValueError): use bf16 on CPU.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of fp32, bf16, fp16")
    device_type = torch.device(device).type
    low = DTYPES[dtype]
    if low is None:
        return contextlib.nullcontext()
    if device_type == "cpu" and low is torch.float16:
        raise ConfigError("fp16 autocast on CPU is not supported by qdm-bench (slow or missing kernels); "
                         "use bf16 on CPU, or fp16 on a CUDA device")
    return torch.autocast(device_type=device_type, dtype=low)


# -- environment -------------------------------------------------------------------------------------------------

def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@functools.lru_cache(maxsize=None)  # provenance is gathered once per process
def _git_info() -> tuple[str | None, bool | None]:
    here = str(Path(__file__).resolve().parent)
    sha = _run(["git", "-C", here, "rev-parse", "HEAD"])
    if not sha:
        return None, None
    status = _run(["git", "-C", here, "status", "--porcelain"])
    return sha, (None if status is None else bool(status))


@functools.lru_cache(maxsize=None)  # provenance is gathered once per process
def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


@functools.lru_cache(maxsize=None)  # provenance is gathered once per process
def _packages_hash() -> tuple[str | None, dict[str, str]]:
    """A short hash of all installed distributions (name==version) and the versions of a few key packages."""
    try:
        from importlib.metadata import distributions

        pkgs = sorted({f"{(d.metadata['Name'] or '').lower()}=={d.version}" for d in distributions()})
    except Exception:
        return None, {}
    key = {}
    for p in pkgs:
        name, _, ver = p.partition("==")
        if name in ("torch", "numpy", "einops", "triton", "qdm-bench", "torchmetrics", "pyiqa", "fvcore"):
            key[name] = ver
    return hashlib.sha256("\n".join(pkgs).encode()).hexdigest()[:16], key


def environment_info(device: str | torch.device = "cpu", full: bool = False) -> dict[str, Any]:
    """Environment metadata for a result row (docs/measurement.md §4.6); every value is JSON-serialisable.

    Keys: torch_version, cuda_version, cudnn_version, device, device_name (GPU name, or the CPU model), cpu_model,
    gpu (name, memory, capability, driver, clocks, MIG; CUDA only), threads, interop_threads, cudnn_benchmark,
    sdpa_backends (the global flash / mem_efficient / math / cudnn switches; the flash switch also gates the CPU
    fused kernel), git_commit, git_dirty, python_version, platform, hostname, timestamp (UTC ISO 8601),
    packages_hash, packages.  ``full=True`` adds ``torch.__config__.show()`` and ``parallel_info()``.
    """
    dev = torch.device(device)
    cuda = dev.type == "cuda" and torch.cuda.is_available()
    sha, dirty = _git_info()
    cpu_model = _cpu_model()
    phash, key_pkgs = _packages_hash()
    info: dict[str, Any] = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda if cuda else None,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "device": str(dev),
        "device_name": cpu_model,
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "gpu": None,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "sdpa_backends": {
            "flash": torch.backends.cuda.flash_sdp_enabled(),
            "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "math": torch.backends.cuda.math_sdp_enabled(),
            "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
        },
        "git_commit": sha,
        "git_dirty": dirty,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "packages_hash": phash,
        "packages": key_pkgs,
    }
    if cuda:
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        gpu = {"name": props.name, "total_memory": int(props.total_memory),
               "capability": f"{props.major}.{props.minor}", "driver": None, "sm_clock_mhz": None,
               "max_sm_clock_mhz": None, "mig_mode": None}
        smi = _run(["nvidia-smi", f"--id={idx}", "--query-gpu=driver_version,clocks.sm,clocks.max.sm,mig.mode.current",
                    "--format=csv,noheader,nounits"], timeout=5.0)
        if smi:
            parts = [p.strip() for p in smi.splitlines()[0].split(",")]
            if len(parts) == 4:
                gpu.update(driver=parts[0], sm_clock_mhz=parts[1], max_sm_clock_mhz=parts[2], mig_mode=parts[3])
        info["gpu"] = gpu
        info["device_name"] = props.name
    if full:
        info["torch_config"] = torch.__config__.show()
        info["parallel_info"] = torch.__config__.parallel_info()
    return info


# -- failures ----------------------------------------------------------------------------------------------------

_OOM_MESSAGES = ("out of memory", "defaultcpuallocator: can't allocate memory", "cannot allocate memory")


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory failure: ``torch.OutOfMemoryError``, ``MemoryError``, or a RuntimeError saying so."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return any(m in msg for m in _OOM_MESSAGES)
    return False
