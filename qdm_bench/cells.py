"""Measurement cells: one (model × resolution × batch × dtype × mask …) combination, measured in its own process.

:func:`measure_cell` measures one cell in the current process (parameters, MACs, peak memory, latency).
:func:`run_cells` runs many cells, each in a fresh subprocess (``python -m qdm_bench.worker``), appends each row to a
results file as soon as it exists, skips cells already finished there, and turns crashes, timeouts and
out-of-memory into rows (``status`` ``error`` / ``oom``) so the sweep goes on.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from qdm.diffusion import POSTERIOR_MODES
from qdm_bench import __version__
from qdm_bench.registry import ModelError, create_model, example_timesteps, resolve
from qdm_bench.results import append_result, empty_row

__all__ = ["Cell", "METRICS", "cell_image", "cell_lr_image", "cell_mask", "measure_cell", "measure_in_process",
           "model_cost_extras",
           "run_cells", "needs_isolation", "resolve_device",
           "lr_test_image", "RunReport"]

METRICS = ("params", "macs", "memory", "speed", "quality")  # quality: sample with ``ckpt`` and score (opt-in)
DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Cell:
    """One measurement: what to build, on what input, and which metrics to take."""

    model: str
    height: int
    width: int
    batch: int = 1
    dtype: str = "fp32"
    device: str = "cpu"
    threshold: float | None = None  # QDM: quadtree threshold on the LR test image
    density: float | None = None  # QDM: fraction of windows selected at random (seeded)
    window: int | None = None  # QDM ablations: downstream window
    patch: int | None = None  # QDM: upstream patch; DiT: patch
    chunk_size: int | None = None
    compile: bool = False
    metrics: tuple[str, ...] = METRICS[:4]
    threads: int | None = None  # CPU threads (recorded); None keeps torch's default
    cpu_max_res: int = 256  # on CPU, real memory/speed runs only up to this side; above it memory is estimated
    warmup: int = 10
    warmup_s: float = 20.0  # warm-up stops after this many seconds (at least one call)
    reps: int = 30
    max_time_s: float = 60.0  # timed repetitions stop after this many seconds (at least 3)
    image: str | None = None  # LR image for threshold masks: a file, or a built-in key "set:name"; None = synthetic
    image_size: int | None = None  # HR side the image is cropped/resized to before degradation (None: native)
    scale: int = 4  # LR degradation factor (bicubic) for image masks
    seed: int = 0
    ckpt: str | None = None  # trained checkpoint for the quality metric (qdm-bench train)
    tile: int | None = None  # quality: sample in independent tiles of this side (None: the whole image at once)
    sampler: str = "stochastic"  # quality: "stochastic" (the paper's) or "deterministic" (x_T = y0, no noise)
    posterior: str | None = None  # quality with a mask: "paper" (Eq. 4) or "reference" (the authors' code); None: paper
    ensemble: int = 1  # quality, stochastic: score the mean of this many samples (seeds seed, seed+1, …)

    def overrides(self) -> dict[str, Any]:
        """Constructor overrides implied by the cell (window / patch / chunk size)."""
        info = resolve(self.model)
        out: dict[str, Any] = {}
        if self.window is not None:
            out["window"] = self.window
        if self.patch is not None:
            out["up_patch" if info.family == "qdm" else "patch"] = self.patch
        if self.chunk_size is not None and info.family == "qdm":
            out["chunk_size"] = self.chunk_size
        return out

    @property
    def key(self) -> str:
        """Identity of the cell for resuming: every parameter plus the qdm-bench version."""
        d = dataclasses.asdict(self)
        d["metrics"] = sorted(d["metrics"])
        for name, default in (("posterior", None), ("ensemble", 1)):  # added later: cells that leave them at their
            if d[name] == default:  # defaults keep their earlier keys (resumable results files)
                del d[name]
        d["version"] = __version__
        return json.dumps(d, sort_keys=True)

    @property
    def real_run(self) -> bool:
        """Whether memory and speed run on real tensors: always off CPU, on CPU up to ``cpu_max_res``."""
        return self.device != "cpu" or max(self.height, self.width) <= self.cpu_max_res

    def label(self) -> str:
        """Short human-readable name for progress bars."""
        extra = "" if self.threshold is None else f" s={self.threshold:g}"
        extra += "" if self.density is None else f" d={self.density:g}"
        extra += "" if self.window is None else f" win={self.window}"
        extra += "" if self.patch is None else f" patch={self.patch}"
        extra += "" if self.posterior is None else f" {self.posterior} posterior"
        extra += "" if self.ensemble == 1 else f" mean of {self.ensemble}"
        extra += "" if self.image is None else f" [{self.image}]"
        return f"{self.model} {self.height}x{self.width} b{self.batch} {self.dtype}{extra}"


def resolve_device(device: str) -> str:
    """'auto' → cuda if available else cpu; 'cuda' without a GPU is a clear error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is available; use --device cpu (or auto)")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    return device


def lr_test_image(height: int, width: int) -> torch.Tensor:
    """The built-in synthetic LR test image, (1, 3, H, W) in [-1, 1]: deterministic for a given size.

    A smooth background with a few sharp-edged discs and stripes (flat regions, edges and texture).  Real images
    (natural photographs, CT/MR slices, phantoms, user folders) come from :mod:`qdm_bench.images`.
    """
    ys, xs = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = 0.3 + 0.2 * xs
    for cy, cx, r, v in ((0.3, 0.3, 0.12, 0.9), (0.65, 0.7, 0.18, 0.1), (0.75, 0.25, 0.08, 0.6)):
        base = torch.where((ys - cy) ** 2 + (xs - cx) ** 2 < r * r, torch.full_like(base, v), base)
    stripes = (ys > 0.1) & (ys < 0.25) & (xs > 0.55) & (xs < 0.9)
    base = torch.where(stripes, 0.5 + 0.4 * torch.sign(torch.sin(xs * 120)), base)
    img = torch.stack([base, base * 0.9, base * 0.8])[None]
    return (img.clamp(0, 1) - 0.5) / 0.5


def cell_image(cell: Cell):
    """The cell's :class:`qdm_bench.images.EvalImage` (None without ``cell.image``), sized as the mask needs it."""
    if cell.image is None:
        return None
    from qdm_bench.images import image_by_name

    return image_by_name(cell.image, size=cell.image_size, multiple=cell.scale)


def cell_lr_image(cell: Cell, image=None) -> torch.Tensor:
    """The LR image a threshold mask is computed from, (1, 3, h, w) in [-1, 1].

    With ``cell.image`` (a built-in key such as "natural:astronaut" or a file): the HR image, center-cropped and
    resized to ``image_size`` (native size if None, cropped to a multiple of ``scale``), degraded by bicubic ×``scale``
    (:func:`qdm_bench.images.degrade`), kept at LR resolution; Alg. 1 pools it to the model's patch grid.  Without:
    the built-in synthetic test image at the cell's size.  ``image``: the cell's image if already loaded.
    """
    if cell.image is None:
        return lr_test_image(cell.height, cell.width)
    from qdm_bench.images import degrade, lr_condition

    img = image if image is not None else cell_image(cell)
    return lr_condition(degrade(img.hr, cell.scale))[None]


def cell_mask(cell: Cell, model: torch.nn.Module, image=None) -> torch.Tensor | None:
    """The patch-grid mask (B, H/p, W/p) of a QDM cell (None: dense path), computed on the CPU from real data.

    ``model`` may live on the meta device (only its patch and window sizes are read); ``image``: the cell's image if
    already loaded."""
    if cell.threshold is None and cell.density is None:
        return None
    if cell.threshold is not None and cell.density is not None:
        raise ValueError("give either a threshold or a density, not both")
    from qdm.quadtree import quadtree_mask, random_window_mask

    gh, gw = cell.height // model.down_patch, cell.width // model.down_patch
    if cell.density is not None:
        g = torch.Generator().manual_seed(cell.seed)
        return random_window_mask(cell.batch, gh, gw, model.window, cell.density, generator=g)
    lr = cell_lr_image(cell, image).expand(cell.batch, -1, -1, -1)
    return quadtree_mask(lr, (gh, gw), cell.threshold)


def _validate(cell: Cell) -> tuple[Any, torch.nn.Module]:
    """Check the cell before any compute; returns (ModelInfo, the model built on the meta device)."""
    info = resolve(cell.model)
    if cell.dtype not in DTYPES:
        raise ValueError(f"unknown dtype {cell.dtype!r}; use one of {', '.join(DTYPES)}")
    unknown = set(cell.metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; use {', '.join(METRICS)}")
    if cell.batch < 1:
        raise ValueError(f"batch must be at least 1, got {cell.batch}")
    if cell.sampler not in ("stochastic", "deterministic"):
        raise ValueError(f"unknown sampler {cell.sampler!r}; use stochastic or deterministic")
    if isinstance(cell.ensemble, bool) or not isinstance(cell.ensemble, int) or cell.ensemble < 1:
        raise ValueError(f"ensemble must be an integer >= 1, got {cell.ensemble!r}")
    if cell.ensemble > 1 and cell.sampler != "stochastic":
        raise ValueError(f"an ensemble averages stochastic samples; the {cell.sampler} sampler gives one result "
                         "(use --ensemble 1)")
    if cell.posterior is not None and cell.posterior not in POSTERIOR_MODES:
        raise ValueError(f"unknown posterior {cell.posterior!r}; use {' or '.join(POSTERIOR_MODES)}")
    if "quality" in cell.metrics and cell.ckpt is None:
        raise ValueError("the quality metric needs a checkpoint; pass --ckpt PATH (from `qdm-bench train`)")
    with torch.device("meta"):
        meta_model = create_model(cell.model, **cell.overrides())
    info.check_resolution(cell.height, cell.width, getattr(meta_model, "input_multiple", None))
    return info, meta_model


def measure_cell(cell: Cell, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure one cell in this process and return its result row (raises on bad input or failure)."""
    from qdm_bench.macs import count_macs
    from qdm_bench.measure import (
        environment_info, peak_memory_cpu, peak_memory_cuda, time_fn,
    )
    from qdm_bench.params import count_parameters

    t_start = time.perf_counter()
    say = progress or (lambda _msg: None)
    info, meta_model = _validate(cell)
    if cell.threads is not None and cell.device == "cpu":
        torch.set_num_threads(cell.threads)
    counts = count_parameters(meta_model)
    uses_mask = info.uses_mask
    image = cell_image(cell)
    mask = cell_mask(cell, meta_model, image) if uses_mask else None
    row = empty_row(
        key=cell.key, model=cell.model, family=info.family, space=info.space, params=counts["learnable"],
        params_paper=counts["paper"], height=cell.height, width=cell.width, batch=cell.batch, dtype=cell.dtype,
        device=cell.device, compile=cell.compile, threshold=cell.threshold, density=cell.density,
        image=cell.image, image_size=cell.image_size if cell.image else None, scale=cell.scale if cell.image else None,
        tile=cell.tile, sampler=cell.sampler if "quality" in cell.metrics else None,
        posterior=cell.posterior if "quality" in cell.metrics else None,
        ensemble=cell.ensemble if "quality" in cell.metrics else None,
        window=getattr(meta_model, "window", None) if uses_mask else None,
        patch=getattr(meta_model, "up_patch", getattr(meta_model, "patch", None)), num_steps=info.num_steps,
    )
    if image is not None:  # record how the image was turned into [0, 1] (medical windowing rule)
        row.update(image_kind=image.kind, image_windowing=image.windowing)
    plan = None
    if uses_mask:
        plan = meta_model.plan(mask, cell.batch, cell.height, cell.width)
        row.update(active_windows=plan.n_selected, total_windows=plan.n_windows, window_density=plan.density,
                   patch_density=1.0 if mask is None else float(mask.float().mean()))

    notes = []
    estimate = "memory" in cell.metrics and not cell.real_run
    mc = None
    if "macs" in cell.metrics or estimate:  # one meta pass counts MACs and is the estimate's warm-up call
        say("macs" if "macs" in cell.metrics else "memory (estimated)")
        mc = count_macs(cell.model, (cell.height, cell.width), cell.batch, mask=mask, estimate_memory=estimate,
                        **cell.overrides())
    if "macs" in cell.metrics:
        row.update(macs=mc.macs, attention_macs=mc.attention_macs, macs_per_sr=mc.macs_per_sr)
        row.update(model_cost_extras(meta_model, cell, mc.macs, notes))
    if "memory" in cell.metrics or "speed" in cell.metrics:
        if cell.real_run:
            model, fn = _build_real(cell, mask)
            if "memory" in cell.metrics:
                say("memory")
                mem = peak_memory_cuda(fn, cell.device) if cell.device != "cpu" else peak_memory_cpu(fn)
                row.update(peak_mem_bytes=mem.peak_bytes, peak_reserved_bytes=mem.peak_reserved_bytes,
                           mem_method=mem.method, mem_estimated=mem.estimated)
            if "speed" in cell.metrics:
                say("warm-up")
                deadline = time.perf_counter() + cell.warmup_s
                for i in range(max(1, cell.warmup)):
                    fn()
                    if time.perf_counter() > deadline:
                        break
                say("timing")
                tm = time_fn(fn, cell.device, warmup=0, reps=cell.reps, max_time=cell.max_time_s)
                row.update(latency_median_ms=tm.median_ms, latency_p10_ms=tm.p10_ms, latency_p90_ms=tm.p90_ms,
                           latency_n=tm.n, throughput_img_s=cell.batch * 1000.0 / tm.median_ms)
                if plan is not None:
                    row["windows_per_s"] = plan.n_selected * 1000.0 / tm.median_ms
            del model
        else:
            if "memory" in cell.metrics:
                mem = mc.memory
                row.update(peak_mem_bytes=mem.peak_bytes, mem_method=mem.method, mem_estimated=True)
                if cell.dtype != "fp32":
                    notes.append(f"estimated memory assumes fp32 activations (no autocast on the meta device); "
                                 f"{cell.dtype} needs less")
            if "speed" in cell.metrics:
                notes.append(f"speed not measured: {cell.height}x{cell.width} on CPU is above --cpu-max-res "
                             f"{cell.cpu_max_res}; raise it to force a (slow) CPU run")
    if "quality" in cell.metrics:
        from qdm_bench.quality import sample_and_score

        say("quality (sampling)")
        values, quality_notes = sample_and_score(cell, image)
        row.update(values)
        if cell.ensemble > 1 and row.get("macs_per_sr") is not None:  # every sample runs the whole chain
            row["macs_per_sr"] *= cell.ensemble
        notes += quality_notes
    env = environment_info(cell.device)
    row.update(threads=torch.get_num_threads(), device_name=env.get("device_name"),
               torch_version=env.get("torch_version"), cuda_version=env.get("cuda_version"),
               git_commit=env.get("git_commit"), timestamp=env.get("timestamp"), status="ok",
               message="; ".join(notes) or None, elapsed_s=time.perf_counter() - t_start)
    return row


def model_cost_extras(model: torch.nn.Module, cell: Cell, macs: int, notes: list[str]) -> dict[str, Any]:
    """Row fields from a model's analytic ``cost_extras`` (binary ops, deployed parameters, DCT/DWT costs).

    Binary networks (BI-DiffSR) report ``bops``, the MACs of their binarised convolutions: then ``ops`` =
    (counted MACs − bops) + bops/64, the field's convention, and a note says that measured speed and memory are those of
    the float simulation.  Everything the model reports is kept in ``cost_extra``.
    """
    fn = getattr(model, "cost_extras", None)
    if fn is None:
        return {}
    extra = fn(cell.height, cell.width, cell.batch)
    out: dict[str, Any] = {"cost_extra": extra}
    if "params_deploy" in extra:
        out["params_deploy"] = extra["params_deploy"]
    if extra.get("bops"):
        bops = int(extra["bops"])
        out.update(bops=bops, ops=(macs - bops) + bops / 64)
        notes.append("binary network simulated in floating point: measured latency and memory are those of the "
                     "float network; BOPs/OPs (fp MACs + BOPs/64) and deployed params are analytic")
    if extra.get("dct_macs_dense") and not extra.get("dct_macs_counted"):
        notes.append(f"DCT via {extra.get('dct_impl')} is not in MACs; as dense matrix products it would add "
                     f"{extra['dct_macs_dense'] / 1e9:,.2f} GMACs")
    return out


def _inputs(cell: Cell, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    info = resolve(cell.model)
    g = torch.Generator().manual_seed(cell.seed)
    x = torch.randn(cell.batch, info.in_channels, cell.height, cell.width, generator=g)
    lq = torch.randn(cell.batch, info.lq_channels, cell.height, cell.width, generator=g)
    t = example_timesteps(info, cell.batch, g)
    return x.to(device), t.to(device), lq.to(device)


def _build_real(cell: Cell, mask: torch.Tensor | None):
    """Model (fp32 weights, autocast for bf16/fp16) and a no-grad forward closure on the cell's device."""
    from qdm_bench.measure import autocast_context

    model = create_model(cell.model, **cell.overrides()).to(cell.device).eval()
    if hasattr(model, "prepare_inference"):  # e.g. BI-DiffSR binarises its weights once, as deployed
        model.prepare_inference()
    runner = torch.compile(model) if cell.compile else model
    x, t, lq = _inputs(cell, cell.device)
    m = None if mask is None else mask.to(cell.device)

    def fn():
        with torch.inference_mode(), autocast_context(cell.device, cell.dtype):
            return runner(x, t, lq, mask=m)

    return model, fn


# -- running many cells ------------------------------------------------------------------------------------------

@dataclass
class RunReport:
    """What happened in a run: rows measured now, how many cells were found finished, and every cell's row in order."""

    measured: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


def _error_row(cell: Cell, status: str, message: str, elapsed: float) -> dict[str, Any]:
    try:
        info = resolve(cell.model)
        family, space = info.family, info.space
    except ModelError:
        family = space = None
    return empty_row(key=cell.key, model=cell.model, family=family, space=space, height=cell.height,
                     width=cell.width, batch=cell.batch, dtype=cell.dtype, device=cell.device, compile=cell.compile,
                     threshold=cell.threshold, density=cell.density, window=cell.window, patch=cell.patch,
                     image=cell.image, status=status, message=message[:2000], elapsed_s=elapsed,
                     timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def run_in_subprocess(cell: Cell, timeout: float | None = None) -> dict[str, Any]:
    """Measure a cell in a fresh Python process; failures, timeouts and kills become error/oom rows."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="qdm-bench-") as tmp:
        out = Path(tmp) / "row.json"
        env = dict(os.environ)
        if cell.threads is not None and cell.device == "cpu":
            env.update(OMP_NUM_THREADS=str(cell.threads), MKL_NUM_THREADS=str(cell.threads))
        try:
            proc = subprocess.run([sys.executable, "-m", "qdm_bench.worker", str(out)],
                                  input=json.dumps(dataclasses.asdict(cell)), text=True, capture_output=True,
                                  timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return _error_row(cell, "error", f"timed out after {timeout:.0f} s", time.perf_counter() - t0)
        if out.exists():
            return json.loads(out.read_text())
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()
        why = tail[-1] if tail else "no output"
        if proc.returncode < 0:
            sig = -proc.returncode
            why = f"killed by signal {sig}" + (" (likely the out-of-memory killer)" if sig == 9 else "")
        return _error_row(cell, "error", f"worker exited with code {proc.returncode}: {why}",
                          time.perf_counter() - t0)


def needs_isolation(cell: Cell) -> bool:
    """True when the cell allocates real tensors (memory or speed on a real run); meta-only work needs no process."""
    return cell.real_run and bool({"memory", "speed"} & set(cell.metrics))


def run_cells(cells: Iterable[Cell], out: str | Path, isolate: bool | str = "auto", timeout: float | None = None,
              on_start: Callable[[Cell], None] | None = None,
              on_done: Callable[[Cell, dict[str, Any]], None] | None = None, jobs: int = 1,
              executor: str = "local", slurm: dict[str, Any] | None = None,
              extra: dict[str, Any] | None = None) -> RunReport:
    """Measure cells not yet finished in ``out``, appending each row as soon as it exists.

    ``isolate``: ``"auto"`` (default) runs every cell that allocates real tensors in a fresh subprocess and
    meta-only cells (parameters, MACs, estimated memory) here; ``True`` isolates every cell; ``False`` none.
    ``jobs`` > 1 runs that many isolated cells at once (local executor; every cell then gets its own process).
    ``extra`` values (e.g. the command line) are stored in every new row.
    ``executor="slurm"`` submits each cell as a Slurm job through submitit (``slurm``: submitit parameters such as
    ``slurm_partition``, ``timeout_min``, ``gpus_per_node``; ``folder`` for logs); rows are gathered into ``out``.
    A cell already finished in ``out`` is not measured again: its stored row is reported with ``cached=True``.
    """
    from qdm_bench.results import FINISHED, read_results

    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if executor not in ("local", "slurm"):
        raise ValueError(f"unknown executor {executor!r}; use local or slurm")
    cells = list(cells)
    previous = {r.get("key"): r for r in (read_results(out) if Path(out).exists() else [])
                if r.get("status") in FINISHED}
    report = RunReport()
    rows: dict[str, dict[str, Any]] = {}
    pending: list[Cell] = []
    for cell in cells:
        if cell.key in previous:
            report.skipped += 1
            rows[cell.key] = dict(previous[cell.key], cached=True)
            if on_done:
                on_done(cell, rows[cell.key])
        elif cell.key not in {c.key for c in pending}:
            pending.append(cell)

    def finish(cell: Cell, row: dict[str, Any]) -> None:
        row.update(extra or {})
        append_result(out, row)
        rows[cell.key] = row
        report.measured.append(row)
        if on_done:
            on_done(cell, row)

    if executor == "slurm":
        _run_submitit(pending, finish, on_start, slurm or {})
    elif jobs > 1:
        from concurrent.futures import ThreadPoolExecutor, as_completed

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {}
            for cell in pending:
                if on_start:
                    on_start(cell)
                futures[pool.submit(run_in_subprocess, cell, timeout)] = cell
            for fut in as_completed(futures):
                finish(futures[fut], fut.result())
    else:
        for cell in pending:
            if on_start:
                on_start(cell)
            sub = needs_isolation(cell) if isolate == "auto" else bool(isolate)
            finish(cell, run_in_subprocess(cell, timeout) if sub else measure_in_process(cell))
    report.rows = [rows[c.key] for c in dict((c.key, c) for c in cells).values() if c.key in rows]
    return report


def measure_cell_dict(cell: dict[str, Any]) -> dict[str, Any]:
    """Measure a cell given as a dict (picklable entry point for cluster executors)."""
    cell = dict(cell, metrics=tuple(cell["metrics"]))
    return measure_in_process(Cell(**cell))


def _run_submitit(cells: list[Cell], finish, on_start, params: dict[str, Any]) -> None:
    """Submit every cell as its own job with submitit and record rows as jobs complete."""
    try:
        import submitit
    except ImportError:
        raise ImportError("--executor slurm needs submitit: pip install submitit (or qdm-bench[slurm])") from None
    params = dict(params)
    folder = params.pop("folder", "results/submitit/%j")
    cluster = params.pop("cluster", None)
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    params.setdefault("timeout_min", 60)
    if ex.cluster == "slurm":
        params.setdefault("gpus_per_node", 1)
    ex.update_parameters(**params)
    jobs = {}
    for cell in cells:
        if on_start:
            on_start(cell)
        jobs[ex.submit(measure_cell_dict, dataclasses.asdict(cell))] = cell
    for job in submitit.helpers.as_completed(list(jobs)):
        cell = jobs[job]
        try:
            row = job.result()
        except Exception as e:  # noqa: BLE001 - a failed job is a result row
            row = _error_row(cell, "error", f"job {job.job_id} failed: {str(e).strip().splitlines()[-1][:300]}", 0.0)
        finish(cell, row)


def measure_in_process(cell: Cell) -> dict[str, Any]:
    """Measure a cell here, turning out-of-memory and other failures into rows."""
    from qdm_bench.measure import is_oom

    t0 = time.perf_counter()
    try:
        return measure_cell(cell)
    except Exception as e:  # noqa: BLE001 - every failure becomes a result row
        if is_oom(e):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return _error_row(cell, "oom", str(e).splitlines()[0] if str(e) else "out of memory",
                              time.perf_counter() - t0)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return _error_row(cell, "error", f"{type(e).__name__}: {msg}", time.perf_counter() - t0)
