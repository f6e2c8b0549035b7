"""Evaluation images: built-in offline image sets, user folders, and the super-resolution degradation.

Image sets
----------
Every image is an :class:`EvalImage` whose ``hr`` is a (3, H, W) float32 tensor in [0, 1] (grey images are repeated to
three channels). Nothing here downloads anything: the built-in sets use only data bundled in the scikit-image,
matplotlib and pydicom wheels. ``load_image_set(spec)`` takes one of these names or a folder/file path:

* ``natural`` (9 photographs, uint8 / 255): scikit-image astronaut (512×512), coffee (400×600), chelsea (300×451),
  rocket (427×640), camera (512×512, grey), hubble_deep_field (centre crop 768×768 of 872×1000), retina (centre crop
  960×960 of 1411×1411, inside the fundus disc), stereo_motorcycle (left view, 500×741); matplotlib grace_hopper.jpg
  (600×512).
* ``medical`` (pydicom test files and a matplotlib MRI): CT_small.dcm (CT 128×128) and J2K_pixelrep_mismatch.dcm (CT
  512×512, JPEG 2000; left out without an error where Pillow cannot decode it), MR_small.dcm (MR 64×64),
  examples_overlay.dcm (MR 300×484), s1045 (matplotlib ``s1045.ima.gz``, MR 256×256, big-endian uint16).
  If the optional package pydicom-data is installed (``import data_store`` works), its bundled CT and MR slices are
  added: 693_UNCI, 693_UNCR, explicit_VR-UN, eCT_Supplemental (2 frames) (CT 512×512), MR2_UNCI (MR 1024×1024),
  MR-SIEMENS-DICOM-WithOverlays (MR 484×484). Without it they are skipped silently; it is not a dependency.
* ``phantoms`` (at ``size``, default 256): shepp_logan (scikit-image's 400×400 phantom, nearest-neighbour resized, so
  it stays piecewise constant) and generated CT-like phantoms (:func:`ct_phantom`): ct_phantom_0, ct_phantom_1,
  ct_phantom_2 (noise-free) and ct_phantom_noisy (seed 0, Gaussian noise of 10 HU). They have large exactly
  homogeneous regions, QDM's favourable case.
* ``builtin`` = natural + medical + phantoms; ``ct`` = the CT slices of ``medical`` + phantoms (QDM's medical case).
* A folder: its PNG/JPEG/TIFF/BMP/WebP files (read with scikit-image) and DICOM files (``.dcm``, or any file with the
  ``DICM`` preamble), sorted by file name, not recursive. Other files, and DICOM files without pixel data (DICOMDIR,
  reports), are skipped; a file that looks like an image but cannot be decoded is an error naming it. A multi-frame
  DICOM gives one image per frame. A single file path gives that file's images. Their ``kind`` is ``"user"``.

Windowing (raw values → [0, 1]; recorded in ``EvalImage.windowing``)
--------------------------------------------------------------------
* CT (DICOM Modality CT): stored values → HU with RescaleSlope/RescaleIntercept (top level, else the enhanced-CT
  functional groups), then the fixed soft-tissue window W400/L40: ``clip((HU + 160) / 400, 0, 1)``, i.e. HU −160 → 0,
  240 → 1 (:func:`ct_window`). The generated phantoms are built in HU and use the same window.
* MR and other grey DICOM, and the s1045 MRI: per-slice percentile clip, ``clip((x − p0.5) / (p99.5 − p0.5), 0, 1)``
  with numpy's linear-interpolation percentiles (:func:`percentile_clip`); per-slice min–max if p0.5 = p99.5.
* MONOCHROME1 DICOM is inverted after windowing; colour DICOM is divided by 2**BitsStored − 1.
* Raster files: uint8 / 255, uint16 / 65535, bool as {0, 1}, floats already in [0, 1] as they are, anything else
  (signed integers, other floats) min–max per image. Photographs: uint8 / 255. RGBA drops alpha.

Sizes
-----
``size`` (None keeps the native size) with ``crop``: ``"center"`` crops the largest centred square and resizes it to
size×size; ``"native"`` takes a centred size×size crop without resampling (an image smaller than ``size`` is first
upscaled so its short side is ``size``); ``"resize"`` resizes the whole image to size×size (aspect not kept). Resizing
is bicubic with antialiasing (``torch.nn.functional.interpolate(..., antialias=True)``), clamped to [0, 1]. Then
``multiple`` crops H and W (centred) down to a multiple of it (models need multiples of 16 or 64), and ``limit`` keeps
the first images.

Degradation
-----------
``lr = degrade(hr, scale, noise, seed)``: bicubic downsampling by ``scale`` with antialiasing (H and W must be
multiples of ``scale``), plus optional Gaussian noise of standard deviation ``noise`` (in [0, 1] units, from a
``torch.Generator`` seeded with ``seed``), clamped to [0, 1]. ``kernel="matlab"`` makes the LR image of published SR
tables instead (:mod:`qdm_bench.data.matlab_resize`): the HR rounded to uint8, MATLAB's ``imresize(hr, 1/scale,
'bicubic')``, the noise, then clamped and rounded to uint8 levels (an LR PNG saved by MATLAB); in the interior it
equals torch's antialiased bicubic, the two LR pixels along each border differ (symmetric padding vs a truncated
kernel), and so do the uint8 levels. ``lr_condition(lr, size)`` resamples the LR image
bicubically to ``size`` (the HR size for a pixel-space condition; None keeps the LR size), clamps to [0, 1] and maps
to [-1, 1] with ``2x − 1``: the units of QDM's LR condition and of the quadtree threshold (Alg. 1). Note that the
reference code computes the quadtree mask from the LR pixels at LR resolution (``lr_condition(lr)``).
"""
from __future__ import annotations

import dataclasses
import difflib
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from qdm_bench.errors import ImageError, require
from qdm_bench.data.matlab_resize import imresize, uint8_grid
from qdm_bench.data.core import (
    KINDS, EvalImage, _center_crop_np, _first_line, _Loader, _positive, _scale_raster, _to_hr,
)
from qdm_bench.data.medical import (
    CT_WINDOW, MR_PERCENTILES, _is_dicom, _medical_entries, _read_user_dicom, ct_window, percentile_clip, read_s1045,
)
from qdm_bench.data.phantoms import PHANTOM_SIZE, _phantom_entries, ct_phantom

__all__ = [
    "EvalImage", "KINDS", "CROPS", "IMAGE_SETS", "CT_WINDOW", "MR_PERCENTILES", "PHANTOM_SIZE", "list_image_sets",
    "list_image_names", "load_image_set", "image_by_name", "read_image_file", "ct_window", "percentile_clip",
    "ct_phantom", "read_s1045", "degrade", "lr_condition", "KERNELS",
]

CROPS = ("center", "native", "resize")
KERNELS = ("torch", "matlab")  # degrade: torch's antialiased bicubic, or MATLAB imresize with uint8 rounding
IMAGE_SETS = {
    "natural": "9 photographs from scikit-image and matplotlib",
    "medical": "CT and MR slices bundled with pydicom and matplotlib (+ pydicom-data if installed)",
    "phantoms": "Shepp-Logan and generated piecewise-constant CT phantoms, at size (default 256)",
    "builtin": "natural + medical + phantoms",
    "ct": "the CT slices of medical + phantoms",
}
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


# ------------------------------------------------------------------------------------------------------- user files

def read_image_file(path: str | Path) -> list[EvalImage]:
    """Read one PNG/JPEG/TIFF/BMP/WebP or DICOM file (kind "user"; a multi-frame DICOM gives one image per frame)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such image file: {path}; check the path")
    if not path.is_file():
        raise ImageError(f"{path} is not a file; give an image file or use load_image_set for folders")
    images = _read_user_file(path)
    if not images:
        raise ImageError(f"DICOM {path} has no pixel data; give an image slice")
    return images


def _read_user_file(path: Path) -> list[EvalImage]:
    """Read a user file; [] for a valid DICOM object without pixel data (DICOMDIR, report); errors name the file."""
    if _is_dicom(path):
        return _read_user_dicom(path)
    if path.suffix.lower() not in RASTER_SUFFIXES:
        raise ImageError(f"{path} is not an image file; give PNG, JPEG, TIFF, BMP, WebP or DICOM (.dcm)")
    require("skimage", "reading image files")
    try:
        from skimage import io

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # imageio's plugin probing warns on undecodable files
            arr = np.asarray(io.imread(str(path)))
        if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4):
            raise ImageError(f"{arr.shape[0]} pages")
        x, rule = _scale_raster(arr)
        hr = _to_hr(x, str(path))
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input file
        raise ImageError(f"cannot read image {path}: {_first_line(e)}; remove it from the folder or save it as a "
                         "single-page PNG") from None
    return [EvalImage(path.name, hr, "user", str(path), rule)]


def _folder_entries(folder: Path) -> list[tuple[str, _Loader]]:
    """The image files of a folder, sorted by name, as lazy loaders."""
    files = sorted((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.name)
    picked = [p for p in files if p.suffix.lower() in RASTER_SUFFIXES or _is_dicom(p)]
    if not picked:
        raise ImageError(f"no images in {folder}: no PNG/JPEG/TIFF/BMP/WebP/DICOM files; give a folder of images")
    return [(p.name, (lambda p=p: _read_user_file(p))) for p in picked]


# ---------------------------------------------------------------------------------------------------- built-in sets

NATURAL = (  # (name, skimage.data function, centre crop side or None)
    ("astronaut", "astronaut", None),
    ("coffee", "coffee", None),
    ("chelsea", "chelsea", None),
    ("rocket", "rocket", None),
    ("camera", "camera", None),
    ("hubble_deep_field", "hubble_deep_field", 768),
    ("retina", "retina", 960),
    ("stereo_motorcycle", "stereo_motorcycle", None),
)


def _skimage_loader(name: str, func: str, crop: int | None) -> _Loader:
    """A loader for a bundled scikit-image photograph (stereo pairs: the left view)."""
    def load() -> list[EvalImage]:
        require("skimage", "the natural image set")
        from skimage import data

        arr = getattr(data, func)()
        arr = arr[0] if isinstance(arr, tuple) else arr
        source = f"skimage.data.{func}()"
        if crop is not None:
            arr, source = _center_crop_np(arr, crop, crop), f"{source}, centre crop {crop}x{crop}"
        x, rule = _scale_raster(np.asarray(arr))
        return [EvalImage(name, _to_hr(x, source), "natural", source, rule)]
    return load


def _grace_hopper() -> list[EvalImage]:
    """matplotlib's bundled grace_hopper.jpg."""
    from matplotlib import cbook

    require("skimage", "the natural image set")
    from skimage import io

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    x, rule = _scale_raster(np.asarray(io.imread(path)))
    return [EvalImage("grace_hopper", _to_hr(x, str(path)), "natural", "matplotlib sample data grace_hopper.jpg",
                      rule)]


def _natural_entries() -> list[tuple[str, _Loader]]:
    """The bundled photographs."""
    return [(n, _skimage_loader(n, f, c)) for n, f, c in NATURAL] + [("grace_hopper", _grace_hopper)]


def _set_entries(name: str, phantom_size: int) -> list[tuple[str, _Loader]]:
    """The lazy loaders of a built-in set."""
    if name == "natural":
        return _natural_entries()
    if name == "medical":
        return _medical_entries()
    if name == "phantoms":
        return _phantom_entries(phantom_size)
    if name == "builtin":
        return _natural_entries() + _medical_entries() + _phantom_entries(phantom_size)
    if name == "ct":
        return _medical_entries(ct_only=True) + _phantom_entries(phantom_size)
    raise ImageError(f"unknown image set {name!r}; use one of {', '.join(IMAGE_SETS)}")


# ------------------------------------------------------------------------------------------------------- public API

def list_image_sets() -> list[str]:
    """Names of the built-in image sets."""
    return list(IMAGE_SETS)


def list_image_names(set_name: str) -> list[str]:
    """Names of the images of a built-in set, without loading them (optional files that fail to decode included;
    a multi-frame file is listed once and loads as name[0], name[1], …)."""
    return [name for name, _ in _set_entries(set_name, PHANTOM_SIZE)]


def _entries_for(spec: str, phantom_size: int) -> list[tuple[str, _Loader]]:
    """Loaders for a set name or a folder/file path."""
    if spec in IMAGE_SETS:
        return _set_entries(spec, phantom_size)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _folder_entries(path)
    if path.is_file():
        return [(path.name, lambda: read_image_file(path))]
    close = difflib.get_close_matches(spec, list(IMAGE_SETS), n=3, cutoff=0.6)
    if close and not any(c in spec for c in "/\\.~"):
        raise ImageError(f"unknown image set {spec!r}; did you mean {' or '.join(close)}? "
                         f"(sets: {', '.join(IMAGE_SETS)}; or give a folder)")
    raise FileNotFoundError(f"no image set or path {spec!r}; give one of {', '.join(IMAGE_SETS)} or an existing "
                            "folder/file")


def _resize(hr: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bicubic resize with antialiasing to (h, w), clamped to [0, 1] (no-op at the same size)."""
    if hr.shape[-2:] == (h, w):
        return hr
    out = F.interpolate(hr[None], size=(h, w), mode="bicubic", antialias=True, align_corners=False)
    return out[0].clamp_(0.0, 1.0)


def _center_crop(hr: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Centred crop of a (3, H, W) tensor."""
    top, left = (hr.shape[-2] - h) // 2, (hr.shape[-1] - w) // 2
    return hr[:, top:top + h, left:left + w].contiguous()


def _fit(img: EvalImage, size: int | None, crop: str, multiple: int) -> EvalImage:
    """Apply size/crop, then crop H and W down to a multiple."""
    hr = img.hr
    if size is not None:
        h, w = hr.shape[-2:]
        if crop == "center":
            side = min(h, w)
            hr = _resize(_center_crop(hr, side, side), size, size)
        elif crop == "resize":
            hr = _resize(hr, size, size)
        else:  # native
            if min(h, w) < size:
                f = size / min(h, w)
                hr = _resize(hr, max(size, round(h * f)), max(size, round(w * f)))
            hr = _center_crop(hr, size, size)
    h, w = hr.shape[-2:]
    mh, mw = h // multiple * multiple, w // multiple * multiple
    if mh == 0 or mw == 0:
        raise ImageError(f"image {img.name} is {h}x{w}, smaller than multiple {multiple}; pass size= to resize it")
    if (mh, mw) != (h, w):
        hr = _center_crop(hr, mh, mw)
    return img if hr is img.hr else dataclasses.replace(img, hr=hr)


def _check_fit_args(size: int | None, crop: str, multiple: int, limit: int | None) -> None:
    """Validate load_image_set's size/crop/multiple/limit arguments."""
    if size is not None:
        _positive(size, "size")
    if crop not in CROPS:
        raise ImageError(f"unknown crop {crop!r}; use one of {', '.join(CROPS)}")
    _positive(multiple, "multiple")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ImageError(f"limit must be a non-negative integer or None, got {limit!r}")


def load_image_set(spec: str, size: int | None = None, crop: str = "center", multiple: int = 1,
                   limit: int | None = None) -> list[EvalImage]:
    """Load a built-in set (list_image_sets()) or a folder/file of images; see the module docstring for the rules.

    ``size`` None keeps native sizes (phantoms: 256); otherwise ``crop`` says how images become size×size
    ("center": centred square crop then antialiased bicubic resize; "native": centred crop without resampling;
    "resize": whole image resized). ``multiple`` then crops H and W (centred) down to a multiple of it; ``limit``
    keeps the first images (only those are decoded). A set name wins over a folder of the same name (use "./name").
    """
    _check_fit_args(size, crop, multiple, limit)
    images: list[EvalImage] = []
    for _, load in _entries_for(str(spec), size or PHANTOM_SIZE):
        if limit is not None and len(images) >= limit:
            break
        images += [_fit(img, size, crop, multiple) for img in load()]
    if limit is not None:
        images = images[:limit]
    if not images and limit != 0:
        raise ImageError(f"no images in {spec}: none of its files has pixel data; give a folder of images")
    return images


def image_by_name(spec_with_name: str, size: int | None = None, crop: str = "center",
                  multiple: int = 1) -> EvalImage:
    """One built-in image by "set:name" (e.g. "natural:astronaut", "medical:CT_small", "phantoms:shepp_logan"),
    a bare built-in name ("astronaut"), or an image file path (its first image); names are case-insensitive."""
    _check_fit_args(size, crop, multiple, None)
    spec = str(spec_with_name)
    set_name, sep, name = spec.partition(":")
    if not sep or set_name not in IMAGE_SETS:
        path = Path(spec).expanduser()
        if path.is_file():
            return _fit(read_image_file(path)[0], size, crop, multiple)
        if sep:
            close = difflib.get_close_matches(set_name, list(IMAGE_SETS), n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(c + ':' + name for c in close)}? " if close else ""
            raise ImageError(f"unknown image set {set_name!r} in {spec!r}; {hint}(sets: {', '.join(IMAGE_SETS)})")
        set_name, name = "builtin", spec
    entries = _set_entries(set_name, size or PHANTOM_SIZE)
    by_key = {n.lower(): (n, load) for n, load in entries}
    if name.lower() not in by_key:
        close = difflib.get_close_matches(name.lower(), list(by_key), n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(set_name + ':' + by_key[c][0] for c in close)}? " if close else ""
        raise ImageError(f"unknown image {spec!r}; {hint}(list them with list_image_names({set_name!r}))")
    full, load = by_key[name.lower()]
    images = load()
    if not images:
        raise ImageError(f"image {set_name}:{full} cannot be decoded here (JPEG 2000 needs Pillow with OpenJPEG); "
                         "pick another image")
    return _fit(images[0], size, crop, multiple)


# ------------------------------------------------------------------------------------------------------ degradation

def _check_image_tensor(x: torch.Tensor, name: str) -> None:
    """Require a floating (C, H, W) or (B, C, H, W) tensor."""
    if not isinstance(x, torch.Tensor) or x.ndim not in (3, 4) or not x.is_floating_point():
        raise ImageError(f"{name} must be a floating (C, H, W) or (B, C, H, W) tensor, got "
                         f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}")


def degrade(hr: torch.Tensor, scale: int = 4, noise: float = 0.0, seed: int = 0,
            kernel: str = "torch") -> torch.Tensor:
    """HR in [0, 1] → LR in [0, 1]: antialiased bicubic downsampling by ``scale``, optional seeded Gaussian noise of
    std ``noise``, clamp to [0, 1]. Accepts (3, H, W) or (B, 3, H, W); H and W must be multiples of ``scale``.

    ``kernel``: "torch" (``F.interpolate(..., antialias=True)``) or "matlab" (the published convention: HR rounded to
    uint8, MATLAB ``imresize(hr, 1/scale, 'bicubic')``, noise, then clamped and rounded to uint8 levels)."""
    _check_image_tensor(hr, "hr")
    scale = _positive(scale, "scale")
    if noise < 0:
        raise ImageError(f"noise must be >= 0, got {noise}")
    if kernel not in KERNELS:
        raise ImageError(f"unknown kernel {kernel!r}; use one of {', '.join(KERNELS)}")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ImageError(f"HR size {h}x{w} is not a multiple of scale {scale}; load images with multiple={scale}")
    x = hr[None] if hr.ndim == 3 else hr
    if kernel == "matlab":
        lr = imresize(uint8_grid(x), 1.0 / scale)
    else:
        lr = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    if noise > 0:
        g = torch.Generator().manual_seed(int(seed))
        lr = lr + noise * torch.randn(lr.shape, generator=g, dtype=lr.dtype).to(lr.device)
    lr = uint8_grid(lr) if kernel == "matlab" else lr.clamp(0.0, 1.0)
    return lr[0] if hr.ndim == 3 else lr


def lr_condition(lr: torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """LR in [0, 1] → the model/mask condition in [-1, 1]: bicubic resampling to ``size`` (an int or (H, W), e.g.
    the HR size; None keeps the LR size), clamp to [0, 1], then ``2x - 1``. Shape (…, 3, H, W) as given."""
    _check_image_tensor(lr, "lr")
    x = lr[None] if lr.ndim == 3 else lr
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        _positive(h, "size")
        _positive(w, "size")
        if x.shape[-2:] != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
    x = x.clamp(0.0, 1.0) * 2.0 - 1.0
    return x[0] if lr.ndim == 3 else x


def image_keys(spec: str, limit: int | None = None) -> list[str]:
    """Keys that :func:`image_by_name` resolves, one per image of a set or folder ("natural:astronaut", or a path).

    Images are loaded once to keep only those that decode here; multi-frame DICOM files count once (first frame).
    """
    images = load_image_set(spec, limit=limit)
    if spec in IMAGE_SETS:
        keys = [f"{spec}:{img.name}" for img in images]
    else:
        path = Path(spec).expanduser()
        base = path if path.is_dir() else path.parent
        keys = [str(base / img.name.split("[")[0]) if path.is_dir() else str(path) for img in images]
    return list(dict.fromkeys(keys))
