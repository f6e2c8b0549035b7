"""A measurement cell: a small record of what to measure — model, input, mask, sampling, run policy, metrics.

A :class:`Cell` is composed of one record per concern, none of which knows a particular model: architecture
options (``window``, ``patch``, ``chunk_size``, …) are generic ``ModelSpec.options`` that the registry maps to the
model's own keywords (:meth:`qdm_bench.registry.ModelInfo.option_kwargs`).  :meth:`Cell.create` builds one from
the flat keyword names the CLI uses.  :attr:`Cell.key`, the identity used to resume a results file, is the JSON of
:meth:`Cell.flat` plus the qdm-bench version — the same text as before the records were split, so existing results
files still resume.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from qdm_bench import __version__

__all__ = ["Cell", "ModelSpec", "InputSpec", "MaskSpec", "SamplingSpec", "RunPolicy", "METRICS", "DTYPES",
           "LEGACY_OPTIONS", "SAMPLERS", "METRIC_CONVENTIONS", "LR_KERNELS"]

METRICS = ("params", "macs", "memory", "speed", "quality")  # quality: sample with a checkpoint and score (opt-in)
DTYPES = ("fp32", "bf16", "fp16")
SAMPLERS = ("stochastic", "deterministic")
LEGACY_OPTIONS = ("window", "patch", "chunk_size")  # always present in the key (null when unset)
METRIC_CONVENTIONS = ("float", "published")  # how LR images are made and SR is scored (docs/measurement.md §5.1)
LR_KERNELS = {"float": "torch", "published": "matlab"}  # convention → qdm_bench.data.images.degrade kernel


@dataclass(frozen=True)
class ModelSpec:
    """Which network: a registered name, architecture options by CLI name, compilation, trained weights."""

    name: str
    options: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs, e.g. (("patch", 4), ("window", 4))
    compile: bool = False
    ckpt: str | None = None  # a trained checkpoint (quality)

    def option(self, name: str) -> Any:
        """The value of an architecture option, or None."""
        return dict(self.options).get(name)


@dataclass(frozen=True)
class InputSpec:
    """The input: size, batch, autocast dtype, the seed of random inputs, an image for data-dependent masks, and
    the metric convention (it makes the LR image too)."""

    height: int
    width: int
    batch: int = 1
    dtype: str = "fp32"
    seed: int = 0
    image: str | None = None  # a file, or a built-in key "set:name"; None = the built-in synthetic test image
    image_size: int | None = None  # HR side the image is cropped/resized to before degradation (None: native)
    scale: int = 4  # LR degradation factor (bicubic)
    metric_convention: str = "float"  # "float": torch bicubic LR, float scores; "published": MATLAB LR, uint8 scores

    @property
    def lr_kernel(self) -> str:
        """The degradation kernel of the metric convention ("torch" or "matlab")."""
        return LR_KERNELS.get(self.metric_convention, "torch")


@dataclass(frozen=True)
class MaskSpec:
    """A mask-using model's mask: a quadtree threshold on the LR image, or a random window density (or neither)."""

    threshold: float | None = None
    density: float | None = None

    @property
    def empty(self) -> bool:
        """No mask asked: the model's dense path."""
        return self.threshold is None and self.density is None


@dataclass(frozen=True)
class SamplingSpec:
    """How the quality metric samples: tiles, sampler variant, reverse step on inactive sites, ensemble size."""

    tile: int | None = None  # sample in independent tiles of this HR side (None: the whole image at once)
    sampler: str = "stochastic"  # "stochastic" (the paper's) or "deterministic" (x_T = y0, no noise)
    posterior: str | None = None  # with a mask: "paper" (Eq. 4) or "reference" (the authors' code); None: paper
    ensemble: int = 1  # stochastic: score the mean of this many samples (seeds seed, seed+1, …)


@dataclass(frozen=True)
class RunPolicy:
    """Where and how long: device, CPU threads, the CPU size limit of real runs, warm-up and timing budgets."""

    device: str = "cpu"
    threads: int | None = None  # CPU threads (recorded); None keeps torch's default
    cpu_max_res: int = 256  # on CPU, real memory/speed runs only up to this side; above it memory is estimated
    warmup: int = 10
    warmup_s: float = 20.0  # warm-up stops after this many seconds (at least one call)
    reps: int = 30
    max_time_s: float = 60.0  # timed repetitions stop after this many seconds (at least 3)


_FLAT = {  # flat keyword (CLI / key name) → (record, field)
    **{f.name: ("input", f.name) for f in dataclasses.fields(InputSpec)},
    **{f.name: ("mask", f.name) for f in dataclasses.fields(MaskSpec)},
    **{f.name: ("sampling", f.name) for f in dataclasses.fields(SamplingSpec)},
    **{f.name: ("run", f.name) for f in dataclasses.fields(RunPolicy)},
    "compile": ("model", "compile"), "ckpt": ("model", "ckpt"),
}
_RECORDS = {"input": InputSpec, "mask": MaskSpec, "sampling": SamplingSpec, "run": RunPolicy}


@dataclass(frozen=True)
class Cell:
    """One measurement: what to build, on what input and mask, how to sample, where to run, which metrics."""

    model: ModelSpec
    input: InputSpec
    mask: MaskSpec = field(default_factory=MaskSpec)
    sampling: SamplingSpec = field(default_factory=SamplingSpec)
    run: RunPolicy = field(default_factory=RunPolicy)
    metrics: tuple[str, ...] = METRICS[:4]

    @classmethod
    def create(cls, model: str, height: int, width: int, metrics: tuple[str, ...] | list[str] = METRICS[:4],
               options: dict[str, Any] | None = None, **flat: Any) -> "Cell":
        """A cell from flat keywords (``threshold=0.15, device="cpu", reps=10, window=4, …``).

        Keywords that are not a field of a record are architecture options (``window``, ``patch``,
        ``chunk_size``, or any other option a model declares); ``None`` values of options are dropped.
        """
        opts = dict(options or {})
        parts: dict[str, dict[str, Any]] = {"model": {}, "input": {"height": height, "width": width}, "mask": {},
                                            "sampling": {}, "run": {}}
        for name, value in flat.items():
            if name in _FLAT:
                record, attr = _FLAT[name]
                parts[record][attr] = value
            else:
                opts[name] = value
        options_t = tuple(sorted((k, v) for k, v in opts.items() if v is not None))
        return cls(model=ModelSpec(model, options_t, **parts["model"]),
                   **{r: _RECORDS[r](**parts[r]) for r in _RECORDS}, metrics=tuple(metrics))

    def flat(self) -> dict[str, Any]:
        """Every setting under its flat name (options included), the form of the key and of the worker's JSON."""
        d: dict[str, Any] = {"model": self.model.name, "compile": self.model.compile, "ckpt": self.model.ckpt}
        for record in ("input", "mask", "sampling", "run"):
            d.update(dataclasses.asdict(getattr(self, record)))
        d.update({name: None for name in LEGACY_OPTIONS})
        d.update(dict(self.model.options))
        d["metrics"] = list(self.metrics)
        return d

    @classmethod
    def from_flat(cls, d: dict[str, Any]) -> "Cell":
        """The inverse of :meth:`flat` (the worker reads a cell this way)."""
        d = dict(d)
        return cls.create(d.pop("model"), d.pop("height"), d.pop("width"), metrics=tuple(d.pop("metrics")), **d)

    @property
    def key(self) -> str:
        """Identity of the cell for resuming: every setting plus the qdm-bench version."""
        d = self.flat()
        d["metrics"] = sorted(d["metrics"])
        for name, default in (("posterior", None), ("ensemble", 1), ("metric_convention", "float")):  # added later:
            if d[name] == default:  # cells that leave them at their defaults keep their earlier keys (resumable)
                del d[name]
        d["version"] = __version__
        return json.dumps(d, sort_keys=True)

    # -- convenience -------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The model name."""
        return self.model.name

    @property
    def device(self) -> str:
        """The device the cell runs on."""
        return self.run.device

    @property
    def real_run(self) -> bool:
        """Whether memory and speed run on real tensors: always off CPU, on CPU up to ``cpu_max_res``."""
        return self.run.device != "cpu" or max(self.input.height, self.input.width) <= self.run.cpu_max_res

    @property
    def needs_isolation(self) -> bool:
        """True when the cell allocates real tensors (memory or speed on a real run); meta-only work needs none."""
        return self.real_run and bool({"memory", "speed"} & set(self.metrics))

    def label(self) -> str:
        """Short human-readable name for progress lines."""
        i, m, s = self.input, self.mask, self.sampling
        extra = "" if m.threshold is None else f" s={m.threshold:g}"
        extra += "" if m.density is None else f" d={m.density:g}"
        extra += "".join(f" {k.replace('_', ' ')}={v}" for k, v in self.model.options)
        extra += "" if s.posterior is None else f" {s.posterior} posterior"
        extra += "" if s.ensemble == 1 else f" mean of {s.ensemble}"
        extra += "" if i.metric_convention == "float" else f" {i.metric_convention} metrics"
        extra += "" if i.image is None else f" [{i.image}]"
        return f"{self.model.name} {i.height}x{i.width} b{i.batch} {i.dtype}{extra}"
