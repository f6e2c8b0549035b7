"""Check the device path of qdm-bench on small inputs before the long GPU measurements (reports/gpu/commands.sh).

Usage: python reports/gpu/check_device.py [--device cuda|cpu]. Prints one line per check and exits non-zero if any
fails: QDM's sparse forward equals the dense one on the selected windows and the upstream prediction elsewhere (float64,
1e-10), fp32 sparse vs dense, bf16 autocast runs, the peak-memory and timing plumbing returns sane values, and the
SDPA kernel choice is reported.
"""
import argparse
import sys

import torch

from qdm_bench.measure.memory import peak_memory_cpu, peak_memory_cuda
from qdm_bench.measure.timing import time_fn
from qdm_bench.registry import create_model


def _check(name: str, ok: bool, detail: str) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    dev = torch.device(ap.parse_args().device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("FAIL cuda: torch.cuda.is_available() is False on this machine")
        return 1
    print(f"device {dev}: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    good = True
    torch.manual_seed(0)
    model = create_model("qdm-t").to(dev)
    for p in model.parameters():  # DiT init zeroes the output layers: give every weight a value
        p.data.normal_(0, 0.05)
    g = torch.Generator().manual_seed(0)
    x, lq = (torch.randn(2, 3, 64, 64, generator=g) for _ in range(2))
    t = torch.tensor([3, 11])
    mask = model.random_mask(2, 64, 64, 0.5, generator=g)
    with torch.no_grad():
        m64 = model.double()
        dense, up = m64(x.double().to(dev), t.to(dev), lq.double().to(dev), return_upstream=True)
        sparse = m64(x.double().to(dev), t.to(dev), lq.double().to(dev), mask=mask.to(dev))
        bits = mask.bool().repeat_interleave(2, -2).repeat_interleave(2, -1)[:, None].expand_as(dense).to(dev)
        err = max((sparse - dense)[bits].abs().max().item(), (sparse - up)[~bits].abs().max().item())
        good &= _check("sparse == dense / upstream (float64)", err < 1e-10, f"max |diff| {err:.2e}")
        m32 = model.float()
        d32 = m32(x.to(dev), t.to(dev), lq.to(dev))
        s32 = m32(x.to(dev), t.to(dev), lq.to(dev), mask=torch.ones_like(mask).to(dev))
        err = (d32 - s32).abs().max().item()
        good &= _check("sparse full mask == dense (float32)", err < 1e-4, f"max |diff| {err:.2e}")
        if dev.type == "cuda" or hasattr(torch, "autocast"):
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                b16 = m32(x.to(dev), t.to(dev), lq.to(dev), mask=mask.to(dev))
            ok = bool(torch.isfinite(b16).all())
            good &= _check("bf16 autocast", ok, f"output {b16.dtype}, max |bf16 - fp32| "
                           f"{(b16.float() - m32(x.to(dev), t.to(dev), lq.to(dev), mask=mask.to(dev))).abs().max():.2e}")
    fn = lambda: m32(x.to(dev), t.to(dev), lq.to(dev), mask=mask.to(dev))  # noqa: E731
    with torch.no_grad():
        mem = peak_memory_cuda(fn, dev, warmup=1) if dev.type == "cuda" else peak_memory_cpu(fn, warmup=1)
        # CUDA: the forward's activations must show; CPU RSS may not grow in a warmed-up process (reused pages)
        ok = mem.peak_bytes > 0 if dev.type == "cuda" else mem.peak_bytes >= 0
        good &= _check("peak memory", ok, f"{mem.peak_bytes / 2 ** 20:.1f} MiB above baseline ({mem.method})")
        tim = time_fn(fn, dev, warmup=1, reps=3)
        good &= _check("timing", tim.median_ms > 0 and tim.n == 3, f"median {tim.median_ms:.2f} ms over {tim.n} reps "
                       f"({tim.method})")
    if dev.type == "cuda":
        print(f"info SDPA backends enabled: flash {torch.backends.cuda.flash_sdp_enabled()}, "
              f"mem-efficient {torch.backends.cuda.mem_efficient_sdp_enabled()}, "
              f"math {torch.backends.cuda.math_sdp_enabled()}")
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
