"""Medical images: DICOM reading, HU conversion, CT windowing, percentile clipping and the bundled medical set."""
from __future__ import annotations

import gzip
import importlib.util
import warnings
from pathlib import Path

import numpy as np

from qdm_bench.errors import ImageError, require
from qdm_bench.data.core import EvalImage, _first_line, _Loader, _to_hr

__all__ = ["CT_WINDOW", "MR_PERCENTILES", "ct_window", "percentile_clip", "read_s1045"]

CT_WINDOW = (40.0, 400.0)  # (level, width) in HU: the soft-tissue window
MR_PERCENTILES = (0.5, 99.5)
PYDICOM_CT = ("CT_small.dcm", "J2K_pixelrep_mismatch.dcm")
PYDICOM_MR = ("MR_small.dcm", "examples_overlay.dcm")
PYDICOM_OPTIONAL = ("J2K_pixelrep_mismatch.dcm",)  # left out where Pillow cannot decode JPEG 2000
DATA_STORE_CT = ("693_UNCI.dcm", "693_UNCR.dcm", "explicit_VR-UN.dcm", "eCT_Supplemental.dcm")
DATA_STORE_MR = ("MR2_UNCI.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm")


# ------------------------------------------------------------------------------------------------------ value rules

def ct_window(hu: np.ndarray, level: float = CT_WINDOW[0], width: float = CT_WINDOW[1]) -> np.ndarray:
    """Map HU to [0, 1] with a fixed window: clip((HU - (level - width/2)) / width, 0, 1)."""
    if width <= 0:
        raise ImageError(f"CT window width must be positive, got {width}")
    lo = level - width / 2
    return np.clip((np.asarray(hu, dtype=np.float64) - lo) / width, 0.0, 1.0)


def percentile_clip(x: np.ndarray, lo: float = MR_PERCENTILES[0], hi: float = MR_PERCENTILES[1]) -> np.ndarray:
    """Map a slice to [0, 1] by clipping at its lo/hi percentiles (min-max if they coincide; zeros if constant)."""
    x = np.asarray(x, dtype=np.float64)
    p_lo, p_hi = np.percentile(x, [lo, hi])
    if p_hi <= p_lo:
        p_lo, p_hi = float(x.min()), float(x.max())
    if p_hi <= p_lo:
        return np.zeros_like(x)
    return np.clip((x - p_lo) / (p_hi - p_lo), 0.0, 1.0)


def _window_label(level: float = CT_WINDOW[0], width: float = CT_WINDOW[1]) -> str:
    """The windowing string of a fixed HU window."""
    lo, hi = level - width / 2, level + width / 2
    name = " (soft tissue)" if (level, width) == CT_WINDOW else ""
    return f"HU window [{lo:g}, {hi:g}] W{width:g}/L{level:g}{name}"


PERCENTILE_LABEL = f"percentile clip {MR_PERCENTILES[0]:g}-{MR_PERCENTILES[1]:g}"


# ------------------------------------------------------------------------------------------------------------ DICOM

def _rescale(ds, frame: int) -> tuple[float, float]:
    """RescaleSlope/Intercept: top level, else the shared or per-frame functional groups (enhanced CT)."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    groups = []
    if "SharedFunctionalGroupsSequence" in ds:
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    if "PerFrameFunctionalGroupsSequence" in ds and frame < len(ds.PerFrameFunctionalGroupsSequence):
        groups.append(ds.PerFrameFunctionalGroupsSequence[frame])
    for group in groups:
        if "PixelValueTransformationSequence" in group:
            item = group.PixelValueTransformationSequence[0]
            return float(item.get("RescaleSlope", 1.0)), float(item.get("RescaleIntercept", 0.0))
    return 1.0, 0.0


def _dicom_pixels(path: Path):
    """Read a DICOM file: (dataset, pixel array), or (dataset, None) when it has no pixel data."""
    pydicom = require("pydicom", "reading DICOM files")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(str(path), force=True)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            return ds, None
        return ds, ds.pixel_array


def _dicom_frames(ds, arr: np.ndarray) -> list[np.ndarray]:
    """Split a pixel array into frames of (H, W) or (H, W, 3)."""
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1 or arr.ndim == (4 if samples > 1 else 3):
        return [arr[i] for i in range(arr.shape[0])]
    return [arr]


def _window_dicom(ds, frame: np.ndarray, index: int) -> tuple[np.ndarray, str]:
    """One DICOM frame to [0, 1] by modality (CT: HU window; colour: bit depth; else percentile clip)."""
    modality = str(ds.get("Modality", "")).upper()
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if frame.ndim == 3:
        bits = int(ds.get("BitsStored", 8))
        return frame / float(2 ** bits - 1), f"colour / {2 ** bits - 1}"
    if modality == "CT":
        slope, intercept = _rescale(ds, index)
        x, rule = ct_window(frame * slope + intercept), _window_label()
    else:
        x, rule = percentile_clip(frame), PERCENTILE_LABEL
    if photometric == "MONOCHROME1":
        x, rule = 1.0 - x, rule + " (MONOCHROME1 inverted)"
    return x, rule


def _read_dicom(path: Path, name: str, kind: str | None, source: str) -> list[EvalImage]:
    """All frames of a DICOM file as EvalImages ([] when it has no pixel data); kind None: from the modality."""
    ds, arr = _dicom_pixels(path)
    return [] if arr is None else _dicom_images(ds, arr, path, name, kind, source)


def _dicom_images(ds, arr: np.ndarray, path: Path, name: str, kind: str | None, source: str) -> list[EvalImage]:
    """The frames of a decoded DICOM dataset as EvalImages, windowed by modality."""
    frames = _dicom_frames(ds, np.asarray(arr))
    modality = str(ds.get("Modality", "")).upper()
    img_kind = kind or ("ct" if modality == "CT" else "mr")
    out = []
    for i, frame in enumerate(frames):
        x, rule = _window_dicom(ds, frame.astype(np.float64), i)
        frame_name = name if len(frames) == 1 else f"{name}[{i}]"
        out.append(EvalImage(frame_name, _to_hr(x, str(path)), img_kind, f"{source} ({modality or 'no modality'})",
                             rule))
    return out


def _is_dicom(path: Path) -> bool:
    """A .dcm file or one with the DICM preamble at byte 128."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _read_user_dicom(path: Path) -> list[EvalImage]:
    """A user's DICOM file (kind "user"); [] for a valid DICOM object without pixel data; errors name the file."""
    require("pydicom", "reading DICOM files")
    try:
        ds, arr = _dicom_pixels(path)
        if arr is None:
            meta = getattr(ds, "file_meta", None)
            if "SOPClassUID" in ds or (meta is not None and "MediaStorageSOPClassUID" in meta):
                return []
            raise ImageError("not a DICOM image")
        return _dicom_images(ds, arr, path, path.name, "user", str(path))
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad input file
        raise ImageError(f"cannot read DICOM {path}: {_first_line(e)}; remove it from the folder or install a "
                         "decoder plugin (pylibjpeg) for its transfer syntax") from None


# ---------------------------------------------------------------------------------------------- bundled medical set

def read_s1045() -> np.ndarray:
    """matplotlib's s1045.ima.gz MRI slice as raw values: gunzipped big-endian uint16, 256×256."""
    from matplotlib import cbook

    with gzip.open(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as f:
        raw = np.frombuffer(f.read(), dtype=">u2")
    if raw.size != 256 * 256:
        raise ImageError(f"s1045.ima.gz has {raw.size} values, expected 256x256; check the matplotlib install")
    return raw.reshape(256, 256).astype(np.uint16)


def _s1045() -> list[EvalImage]:
    """The s1045 MRI slice, percentile-clipped."""
    x = percentile_clip(read_s1045())
    return [EvalImage("s1045", _to_hr(x, "s1045"), "mr", "matplotlib sample data s1045.ima.gz (MR, big-endian uint16)",
                      PERCENTILE_LABEL)]


def _testdata_loader(filename: str, optional: bool) -> _Loader:
    """A loader for a pydicom (or pydicom-data) test file, never downloading; optional files fail silently."""
    def load() -> list[EvalImage]:
        require("pydicom", "the bundled DICOM image set")
        from pydicom.data import get_testdata_file

        path = get_testdata_file(filename, download=False)
        if path is None:
            if optional:
                return []
            raise ImageError(f"pydicom test file {filename} is missing; reinstall pydicom")
        try:
            return _read_dicom(Path(path), Path(filename).stem, None, f"pydicom test file {filename}")
        except Exception:
            if optional:
                return []
            raise
    return load


def _data_store_files(names: tuple[str, ...]) -> tuple[str, ...]:
    """The pydicom-data files to use: all of them if ``data_store`` is importable, else none."""
    return names if importlib.util.find_spec("data_store") is not None else ()


def _medical_entries(ct_only: bool = False) -> list[tuple[str, _Loader]]:
    """CT (and, unless ct_only, MR) slices bundled with pydicom, matplotlib and optionally pydicom-data."""
    entries = [(Path(f).stem, _testdata_loader(f, f in PYDICOM_OPTIONAL)) for f in PYDICOM_CT]
    if not ct_only:
        entries += [(Path(f).stem, _testdata_loader(f, False)) for f in PYDICOM_MR]
        entries.append(("s1045", _s1045))
    extra = DATA_STORE_CT if ct_only else DATA_STORE_CT + DATA_STORE_MR
    entries += [(Path(f).stem, _testdata_loader(f, True)) for f in _data_store_files(extra)]
    return entries
