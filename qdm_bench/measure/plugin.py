"""Measurement plugins: one module per quantity, each adding its documented columns to a cell's result row.

A plugin is an object with ``name``, ``columns`` (column → one-line documentation) and
``measure(ctx, row)``, which reads the shared :class:`CellContext` and writes its columns into ``row`` (notes go
to ``ctx.notes``).  The core (:mod:`qdm_bench.measure.core`) runs the plugins a cell's ``metrics`` name, in the
order of :data:`PLUGINS`; it finds them through this table of import paths, so it imports no evaluation code.
The context builds what several plugins share exactly once per cell: the model on the meta device, its mask and
window plan, the one meta-device pass that counts MACs (and, when asked, estimates memory), and the real model
with its forward closure.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["PLUGINS", "Plugin", "CellContext", "load_plugin", "plugin_columns", "CELL_COLUMNS", "RUN_COLUMNS"]

PLUGINS: dict[str, str] = {  # metric name → "module:attribute" of its plugin, in running order
    "macs": "qdm_bench.measure.macs:PLUGIN",
    "memory": "qdm_bench.measure.memory:PLUGIN",
    "speed": "qdm_bench.measure.timing:PLUGIN",
    "quality": "qdm_bench.evaluate.quality:PLUGIN",
}

CELL_COLUMNS: dict[str, str] = {  # what every row records about its cell (identity columns marked by compare)
    "key": "identity of the cell (all its settings plus the qdm-bench version); used to resume",
    "model": "registered model name (or package.module:factory)",
    "family": "model family (qdm, dit, unet, swin-unet, bi-diffsr, dualdomain, user, plugin)",
    "space": "latent or pixel",
    "params": "learnable parameters",
    "params_paper": "parameters in the paper's own convention where one exists (QDM: Table 5; BI-DiffSR: deployed)",
    "height": "input height", "width": "input width", "batch": "batch size",
    "dtype": "fp32, or the bf16/fp16 autocast dtype (weights stay fp32)",
    "device": "device the cell ran on (cpu, cuda, cuda:N)",
    "compile": "whether torch.compile(model) was measured",
    "threshold": "quadtree threshold s of a data-dependent mask (mask-using models), on the LR image in [-1, 1]",
    "density": "fraction of windows selected at random (mask-using models)",
    "window": "the model's downstream window (mask-using models)",
    "patch": "the model's (upstream) patch size, where it has one",
    "image": "the image a threshold mask or quality row came from (file or built-in key set:name)",
    "image_size": "HR side the image was cropped and resized to", "scale": "LR degradation (and SR) factor",
    "tile": "quality: HR side of the independent tiles that were sampled (None: the whole image)",
    "sampler": "quality: stochastic (the paper's sampler) or deterministic (x_T = y0, posterior means)",
    "posterior": "quality with a mask: reverse step on inactive sites, paper (Eq. 4) or reference",
    "ensemble": "quality: the score is of the mean of this many stochastic samples",
    "metric_convention": "quality: float (LR by torch antialiased bicubic, SR and HR scored as floats) or published "
                         "(LR by MATLAB-compatible imresize bicubic, SR and HR rounded to uint8 before scoring, as "
                         "published SR tables); the bicubic floor follows it",
    "image_kind": "natural, ct, mr, phantom or user",
    "image_windowing": "the rule that mapped the image's raw values to [0, 1] (e.g. CT window W400/L40)",
    "patch_density": "fraction of the mask's patch bits that are set (1.0 for the dense path)",
    "window_density": "fraction of windows computed", "active_windows": "windows computed (over the batch)",
    "total_windows": "windows in the batch",
    "num_steps": "network evaluations of one super-resolution (NFE)",
}
RUN_COLUMNS: dict[str, str] = {  # what every row records about where and how it ran
    "threads": "CPU threads torch used", "device_name": "GPU name, or the CPU model",
    "torch_version": "torch version", "cuda_version": "CUDA version (None on CPU)",
    "git_commit": "commit of qdm-bench that measured the row", "timestamp": "UTC time the row was written",
    "status": "ok, oom or error (error rows are measured again on the next run)",
    "message": "notes of an ok row, or the reason of a failure (one line)",
    "traceback": "the full traceback of a failure (error rows only)",
    "elapsed_s": "wall time of the cell, seconds",
    "command": "the qdm-bench command line that produced the row",
}


class Plugin:
    """Base class of a measurement plugin: ``columns`` it writes, ``measure(ctx, row)`` that writes them."""

    name = "base"
    columns: dict[str, str] = {}

    def measure(self, ctx: "CellContext", row: dict[str, Any]) -> None:
        """Write this plugin's columns into ``row``."""
        raise NotImplementedError


def load_plugin(name: str) -> Plugin:
    """The plugin of a metric name (imported on first use)."""
    mod, _, attr = PLUGINS[name].partition(":")
    return getattr(importlib.import_module(mod), attr)


def plugin_columns() -> dict[str, dict[str, str]]:
    """Every plugin's documented columns, by metric name."""
    return {name: load_plugin(name).columns for name in PLUGINS}


class CellContext:
    """What the plugins of one cell share, each built once: model info, meta model, image, mask, plan, counts."""

    def __init__(self, cell: Any, say: Callable[[str], None] | None = None):
        from qdm_bench.measure.inputs import cell_image, cell_mask
        from qdm_bench.measure.validate import meta_model

        self.cell = cell
        self.say = say or (lambda _msg: None)
        self.notes: list[str] = []
        self.say("build")
        self.info, self.meta_model = meta_model(cell.model.name, cell.model.options)  # once per process
        self.overrides = self.info.option_kwargs(dict(cell.model.options))
        storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes()
                    for t in [*self.meta_model.parameters(), *self.meta_model.buffers()]}
        self._resident = sum(storages.values())  # bytes resident before a forward: the estimate's baseline
        self.image = cell_image(cell)
        counted = bool(set(cell.metrics) - {"params"})  # parameters alone need no mask, plan or tensor at all
        self.mask = cell_mask(cell, self.meta_model, self.image) if self.info.uses_mask and counted else None
        self.plan = None
        if self.info.uses_mask and counted and hasattr(self.meta_model, "plan"):
            i = cell.input
            self.plan = self.meta_model.plan(self.mask, i.batch, i.height, i.width)
        self._count = None
        self._real = None

    @property
    def estimate_memory(self) -> bool:
        """Whether memory is estimated on the meta device (asked, and the cell is too big for a real run)."""
        return "memory" in self.cell.metrics and not self.cell.real_run

    def count(self):
        """The one meta-device pass: a :class:`qdm_bench.measure.macs.MacCount` (with the memory estimate)."""
        if self._count is None:
            from qdm_bench.measure.macs import count_model_macs

            i = self.cell.input
            self.say("count" if "macs" in self.cell.metrics else "estimate")
            self._count = count_model_macs(self.meta_model, self.info, i.height, i.width, i.batch, mask=self.mask,
                                           plan=self.plan, estimate_memory=self.estimate_memory,
                                           baseline_bytes=self._resident)
        return self._count

    def real(self):
        """(model, fn): the model with real weights on the cell's device and a no-grad forward closure."""
        if self._real is None:
            from qdm_bench.measure.inputs import build_real

            self.say("build")
            self._real = build_real(self.cell, self.overrides, self.mask)
        return self._real

    def release(self) -> None:
        """Drop the real model and its inputs."""
        self._real = None
