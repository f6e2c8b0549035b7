"""QDM — Quadtree Diffusion Model (arXiv 2503.12015), a faithful re-implementation.

* :mod:`qdm.quadtree` — quadtree masks (Algorithm 1) and window helpers.
* :mod:`qdm.diffusion` — mask-guided residual-shifting diffusion (Eq. 1–7) and the sampler.
* :mod:`qdm.model` — the dual-stream network (Fig. 2) in sizes S/B/L.
* :mod:`qdm.layers` — transformer building blocks shared with the DiT baselines.
"""
__version__ = "0.1.0"
