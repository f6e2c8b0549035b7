"""The built-in models: one table of name → factory path + metadata (the idea of DiT's ``DiT_models`` dict).

The model packages (:mod:`qdm`, :mod:`baselines`) know nothing of this table or of the harness; each entry names
a plain factory function by its import path, imported only when that model is built.  ``default_cfg`` is what the
factory is called with (keywords given to ``create_model`` override it); ``options`` maps the CLI's architecture
options (``--window``, ``--patch``, ``--chunk-size``) to the factory's keywords.
"""
from __future__ import annotations

from qdm_bench.registry import ModelInfo

__all__ = ["MODELS", "FIGURE5_MODELS"]

FIGURE5_MODELS = ("qdm-s", "qdm-b", "qdm-l", "dit-s/8", "dit-l/8", "dit-s/2", "unet", "swin-unet")
_DIT_SIZES = {"s": "12 blocks, hidden 384, 6 heads", "b": "12 blocks, hidden 768, 12 heads",
              "l": "24 blocks, hidden 1024, 16 heads", "xl": "28 blocks, hidden 1152, 16 heads"}

_QDM = dict(family="qdm", space="latent", multiple=16, uses_mask=True, num_steps=15,
            options={"window": "window", "patch": "up_patch", "chunk_size": "chunk_size"})
_QDM_SIZES = {  # name: description (the factories in qdm.model hold the sizes)
    "qdm-s": "QDM-S: 6+6 blocks, hidden 384, 6 heads (Table 5: 50.87 M).",
    "qdm-b": "QDM-B: 6+6 blocks, hidden 768, 12 heads (Table 5: 199.06 M).",
    "qdm-l": "QDM-L: 12+12 blocks, hidden 1024, 16 heads (Table 5: 691.94 M).",
    "qdm-t": "QDM-T: a tiny 2+2-block, hidden-128 variant for CPU training and tests (not in the paper).",
}
_BI_DIFFSR = dict(family="bi-diffsr", space="pixel", multiple=8, uses_mask=False, num_steps=50, diffusion="bi-diffsr",
                  t_max=2000, uniform_t=True)


def _table() -> dict[str, ModelInfo]:
    """Every built-in model, in listing order."""
    models: dict[str, ModelInfo] = {}
    for name, doc in _QDM_SIZES.items():
        models[name] = ModelInfo(name, f"qdm.model:{name.replace('-', '_')}", description=doc, **_QDM)
    for size, doc in _DIT_SIZES.items():
        for patch in (2, 4, 8):
            name = f"dit-{size}/{patch}"
            models[name] = ModelInfo(
                name, "baselines.dit:dit", family="dit", space="latent", multiple=patch, uses_mask=False,
                default_cfg=dict(size=size, patch=patch), options={"patch": "patch"},
                description=f"DiT-{size.upper()}/{patch}: {doc}, LR-conditioned.")
    models["unet"] = ModelInfo("unet", "baselines.unet:unet", family="unet", space="pixel", multiple=8,
                               description="ADM U-Net with global attention at every level (QDM Figure 5; "
                               "115,984,323 parameters).")
    models["swin-unet"] = ModelInfo("swin-unet", "baselines.swin_unet:swin_unet", family="swin-unet", space="pixel",
                                    multiple=64, description="ADM U-Net with Swin window-attention layers (ResShift "
                                    "real-SR net, QDM Figure 5; 118,593,583 parameters).")
    models["bi-diffsr"] = ModelInfo("bi-diffsr", "baselines.bi_diffsr:bi_diffsr",
                                    description="BI-DiffSR binarised U-Net (1-bit convs, TaR/TaA, K = 5); 4,575,043 "
                                    "deployed / 51,280,387 FP-equivalent params.", **_BI_DIFFSR)
    models["bi-diffsr-fp"] = ModelInfo("bi-diffsr-fp", "baselines.bi_diffsr:bi_diffsr_fp",
                                       description="BI-DiffSR's full-precision counterpart: the same network without "
                                       "binarisation (51,280,387 FP parameters).", **_BI_DIFFSR)
    models["dualdomain-resshift"] = ModelInfo(
        "dualdomain-resshift", "baselines.dualdomain:dualdomain_resshift", family="dualdomain", space="pixel",
        multiple=8, num_steps=15, diffusion="dualdomain",
        description="Dual-domain (spatial + DCT + DWT) ResShift U-Net, predicts x0 - y0 (1,387,075 parameters).")
    for name, kind in (("kl-f4", "medical KL-f4"), ("vq-f4", "real-world VQ-f4")):
        models[name] = ModelInfo(
            name, f"qdm.first_stage:{name.replace('-', '_')}", family="first-stage", space="pixel", multiple=4,
            num_steps=1, diffusion="none",
            description=f"QDM's {kind} first-stage autoencoder (LDM encoder + decoder, diffusers): one round trip "
                        "per SR (needs diffusers: pip install 'qdm-bench[latent]').")
    return models


MODELS = _table()
