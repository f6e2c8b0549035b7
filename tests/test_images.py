"""Tests of qdm_bench.data.images: the offline image sets, user folders, windowing rules and the SR degradation.

Oracles: windowing formulas applied by hand to synthetic DICOM files written with pydicom, hand-computed percentiles
of a permuted ramp, exact crops of native images, and properties of bicubic resampling (constants stay constant, a
linear ramp is sampled at the output pixel centres).
"""
from __future__ import annotations

import importlib.util
import socket

import numpy as np
import pytest
import torch

from qdm_bench.data import images as im
from qdm_bench.data import medical, phantoms
from qdm_bench.data.images import (
    EvalImage,
    ct_phantom,
    ct_window,
    degrade,
    image_by_name,
    list_image_names,
    list_image_sets,
    load_image_set,
    lr_condition,
    percentile_clip,
    read_image_file,
)

BASE_SETS = ("natural", "medical", "phantoms")


# ------------------------------------------------------------------------------------------------------- helpers

def write_dicom(path, pixels: np.ndarray, modality: str = "CT", slope: float | None = None,
                intercept: float | None = None, photometric: str = "MONOCHROME2", with_pixels: bool = True,
                shared_rescale: tuple[float, float] | None = None) -> None:
    """Write a minimal uncompressed DICOM file (one or more frames of int16/uint16) with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    if with_pixels:
        ds.Rows, ds.Columns = pixels.shape[-2:]
        if pixels.ndim == 3:
            ds.NumberOfFrames = pixels.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1 if pixels.dtype == np.int16 else 0
        ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if shared_rescale is not None:
        item, group = Dataset(), Dataset()
        item.RescaleSlope, item.RescaleIntercept = shared_rescale
        group.PixelValueTransformationSequence = Sequence([item])
        ds.SharedFunctionalGroupsSequence = Sequence([group])
    ds.save_as(path, enforce_file_format=True)


def window_by_hand(hu: float, level: float = 40.0, width: float = 400.0) -> float:
    """The fixed-window formula, written out for one value."""
    return min(max((hu - (level - width / 2)) / width, 0.0), 1.0)


def check_image(img: EvalImage) -> None:
    """The invariants every EvalImage must hold."""
    assert img.hr.dtype == torch.float32
    assert img.hr.ndim == 3 and img.hr.shape[0] == 3 and min(img.hr.shape[1:]) >= 1
    assert float(img.hr.min()) >= 0.0 and float(img.hr.max()) <= 1.0
    assert float(img.hr.std()) > 0.01, f"{img.name} is (nearly) constant"
    assert torch.isfinite(img.hr).all()


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a network connection."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def base_sets():
    """The three base built-in sets, loaded once."""
    return {name: load_image_set(name) for name in BASE_SETS}


# ---------------------------------------------------------------------------------------------- built-in sets

def test_list_image_sets():
    assert list_image_sets() == ["natural", "medical", "phantoms", "builtin", "ct"]


@pytest.mark.parametrize("name", ["natural", "medical", "phantoms", "builtin", "ct"])
def test_builtin_sets_load_offline(name, no_network):
    images = load_image_set(name)
    assert images
    for img in images:
        check_image(img)
    assert len({img.name for img in images}) == len(images)


def test_set_contents_and_kinds(base_sets):
    natural = base_sets["natural"]
    assert [i.name for i in natural] == ["astronaut", "coffee", "chelsea", "rocket", "camera", "hubble_deep_field",
                                         "retina", "stereo_motorcycle", "grace_hopper"]
    assert all(i.kind == "natural" and min(i.size) >= 300 for i in natural)
    camera = next(i for i in natural if i.name == "camera")
    assert torch.equal(camera.hr[0], camera.hr[1]) and torch.equal(camera.hr[0], camera.hr[2])  # grey → 3 channels
    medical = {i.name: i for i in base_sets["medical"]}
    assert {"CT_small", "MR_small", "examples_overlay", "s1045"} <= set(medical)
    assert medical["CT_small"].kind == "ct" and medical["CT_small"].windowing.startswith("HU window [-160, 240]")
    assert medical["MR_small"].kind == "mr" and medical["MR_small"].windowing == "percentile clip 0.5-99.5"
    assert medical["s1045"].size == (256, 256) and medical["CT_small"].size == (128, 128)
    phantoms = base_sets["phantoms"]
    assert all(i.kind == "phantom" and i.size == (256, 256) for i in phantoms)
    assert "shepp_logan" in [i.name for i in phantoms]


def test_builtin_and_ct_are_unions():
    assert list_image_names("builtin") == sum((list_image_names(s) for s in BASE_SETS), [])
    ct = load_image_set("ct")
    assert {i.kind for i in ct} == {"ct", "phantom"}
    assert [i.name for i in ct if i.kind == "phantom"] == list_image_names("phantoms")
    assert "CT_small" in [i.name for i in ct]


def test_ct_small_matches_window_formula():
    """CT_small: HU from the header's slope/intercept, then W400/L40, checked pixel by pixel."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm", download=False))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.vectorize(window_by_hand)(hu)
    got = image_by_name("medical:CT_small").hr[0].double().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_s1045_is_big_endian():
    raw = im.read_s1045()
    assert raw.shape == (256, 256)
    swapped = raw.byteswap()  # what a little-endian reader would see
    assert raw.max() < 4096 < swapped.max()  # a 12-bit MR range, not byte-swapped garbage


def test_undecodable_optional_file_is_skipped(monkeypatch):
    real = medical._dicom_pixels

    def fail_j2k(path):
        if "J2K" in str(path):
            raise RuntimeError("no JPEG 2000 decoder")
        return real(path)
    monkeypatch.setattr(medical, "_dicom_pixels", fail_j2k)
    names = [i.name for i in load_image_set("medical")]
    assert "J2K_pixelrep_mismatch" not in names and "CT_small" in names
    with pytest.raises(ValueError, match="cannot be decoded"):
        image_by_name("medical:J2K_pixelrep_mismatch")


def test_pydicom_data_files_are_optional(monkeypatch):
    """With data_store importable its files are listed; files it does not hold are skipped silently."""
    if importlib.util.find_spec("data_store") is not None:
        pytest.skip("pydicom-data is installed")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "data_store" else real(n, *a))
    assert "693_UNCI" in list_image_names("medical") and "MR2_UNCI" not in list_image_names("ct")
    monkeypatch.setattr(medical, "_data_store_files", lambda names: ("NOT_BUNDLED.dcm",))
    assert "NOT_BUNDLED" not in [i.name for i in load_image_set("medical")]


# ---------------------------------------------------------------------------------------------------- windowing

def test_ct_window_known_values():
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 1000.0, 0.0])
    np.testing.assert_allclose(ct_window(hu), [window_by_hand(v) for v in hu])
    assert ct_window(np.array([40.0]))[0] == 0.5
    np.testing.assert_allclose(ct_window(np.array([0.0]), level=0, width=100), [0.5])
    with pytest.raises(ValueError, match="width"):
        ct_window(np.zeros(1), width=0)


def test_ct_dicom_window_applied_to_hu(tmp_path):
    """A synthetic CT with slope 2 and intercept -1024: the window applies to HU, not to stored values."""
    raw = np.array([[0, 400, 432, 500], [532, 600, 700, 2000]], dtype=np.int16)
    write_dicom(tmp_path / "ct.dcm", raw, "CT", slope=2.0, intercept=-1024.0)
    (img,) = read_image_file(tmp_path / "ct.dcm")
    expected = np.vectorize(window_by_hand)(raw * 2.0 - 1024.0)
    np.testing.assert_allclose(img.hr.double().numpy(), np.broadcast_to(expected, (3, 2, 4)), atol=1e-6)
    assert img.hr[0, 1, 0] == 0.5  # raw 532 → 40 HU, the window level
    assert img.kind == "user" and "W400/L40" in img.windowing and "CT" in img.source


def test_enhanced_ct_rescale_and_frames(tmp_path):
    """Rescale in the shared functional groups (enhanced CT); every frame becomes an image."""
    raw = np.stack([np.full((4, 4), 100, np.int16), np.full((4, 4), 300, np.int16)])
    raw[:, 0, 0] = 0
    write_dicom(tmp_path / "enh.dcm", raw, "CT", shared_rescale=(1.0, -200.0))
    images = read_image_file(tmp_path / "enh.dcm")
    assert [i.name for i in images] == ["enh.dcm[0]", "enh.dcm[1]"]
    assert float(images[0].hr[0, 1, 1]) == pytest.approx(window_by_hand(-100.0))
    assert float(images[1].hr[0, 1, 1]) == pytest.approx(window_by_hand(100.0))


def test_mr_percentile_rule(tmp_path):
    """A permuted ramp 0..999: numpy's linear percentiles are q/100·(N−1), so p0.5 = 4.995, p99.5 = 994.005."""
    ramp = np.random.default_rng(0).permutation(1000).astype(np.uint16).reshape(25, 40)
    lo, hi = 0.005 * 999, 0.995 * 999
    expected = np.clip((ramp - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(percentile_clip(ramp), expected, atol=1e-12)
    write_dicom(tmp_path / "mr.dcm", ramp, "MR")
    (img,) = read_image_file(tmp_path / "mr.dcm")
    np.testing.assert_allclose(img.hr[0].double().numpy(), expected, atol=1e-6)
    assert img.windowing == "percentile clip 0.5-99.5"
    assert (img.hr[0] == 0).sum() == 5 and (img.hr[0] == 1).sum() == 5  # 0..4 and 995..999 saturate


def test_percentile_clip_degenerate_cases():
    spot = np.zeros((10, 10))
    spot[0, 0] = 7.0  # both percentiles are 0: falls back to min-max
    out = percentile_clip(spot)
    assert out[0, 0] == 1.0 and out.sum() == 1.0
    assert not percentile_clip(np.full((4, 4), 3.0)).any()


def test_monochrome1_is_inverted(tmp_path):
    ramp = np.arange(200, dtype=np.uint16).reshape(10, 20)
    write_dicom(tmp_path / "m1.dcm", ramp, "MR", photometric="MONOCHROME1")
    (img,) = read_image_file(tmp_path / "m1.dcm")
    np.testing.assert_allclose(img.hr[0].double().numpy(), 1.0 - percentile_clip(ramp), atol=1e-6)
    assert "inverted" in img.windowing


# -------------------------------------------------------------------------------------------------- user folders

def test_user_folder_png_and_dicom(tmp_path):
    from skimage import io

    rgb = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    io.imsave(tmp_path / "b.png", rgb, check_contrast=False)
    grey16 = (np.arange(20 * 24, dtype=np.uint16) * 100).reshape(20, 24)
    io.imsave(tmp_path / "c.tif", grey16, check_contrast=False)
    write_dicom(tmp_path / "a.dcm", np.arange(64, dtype=np.int16).reshape(8, 8) * 10, "CT", 1.0, -200.0)
    write_dicom(tmp_path / "IM0001", np.arange(64, dtype=np.uint16).reshape(8, 8), "MR")  # DICM preamble, no suffix
    write_dicom(tmp_path / "DICOMDIR", np.zeros((1, 1), np.uint16), "MR", with_pixels=False)  # no pixel data
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    images = load_image_set(str(tmp_path))
    assert [i.name for i in images] == ["IM0001", "a.dcm", "b.png", "c.tif"]
    for img in images:
        check_image(img)
        assert img.kind == "user"
    np.testing.assert_allclose(images[2].hr.permute(1, 2, 0).numpy(), rgb / 255.0, atol=1e-6)
    assert images[2].windowing == "uint8 / 255"
    np.testing.assert_allclose(images[3].hr[1].double().numpy(), grey16 / 65535.0, atol=1e-6)
    assert images[3].windowing == "uint16 / 65535"
    assert load_image_set(str(tmp_path / "b.png"))[0].name == "b.png"  # a single file works too


def test_matplotlib_png_drops_alpha(tmp_path):
    import matplotlib.pyplot as plt

    grey = np.linspace(0, 1, 16 * 16).reshape(16, 16)
    plt.imsave(tmp_path / "g.png", grey, cmap="gray", vmin=0, vmax=1)  # written as RGBA uint8
    (img,) = load_image_set(str(tmp_path))
    np.testing.assert_allclose(img.hr[0].double().numpy(), grey, atol=1 / 255 + 1e-6)


@pytest.mark.parametrize("content", [None, "notes.txt"])
def test_folder_without_images(tmp_path, content):
    if content:
        (tmp_path / content).write_text("hello")
    with pytest.raises(ValueError, match="no images"):
        load_image_set(str(tmp_path))


@pytest.mark.parametrize("bad_name", ["broken.png", "broken.dcm"])
def test_corrupt_file_is_named(tmp_path, bad_name):
    from skimage import io

    io.imsave(tmp_path / "good.png", np.full((8, 8), 100, np.uint8), check_contrast=False)
    (tmp_path / bad_name).write_bytes(np.random.default_rng(2).integers(0, 256, 300, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match=bad_name.replace(".", r"\.")) as info:
        load_image_set(str(tmp_path))
    assert "remove it" in str(info.value) and "\n" not in str(info.value)


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        load_image_set("/tmp/qdm-bench-test/no_such_folder")
    with pytest.raises(FileNotFoundError):
        read_image_file("/tmp/qdm-bench-test/no_such_file.png")


def test_unknown_set_name_suggests():
    with pytest.raises(ValueError, match="natural"):
        load_image_set("natual")


def test_dicom_without_pixels_given_alone(tmp_path):
    write_dicom(tmp_path / "x.dcm", np.zeros((1, 1), np.uint16), "MR", with_pixels=False)
    with pytest.raises(ValueError, match="no pixel data"):
        read_image_file(tmp_path / "x.dcm")


# ---------------------------------------------------------------------------------------------- size and crop

def test_size_center_crop_resize(base_sets):
    for img in load_image_set("natural", size=96):
        assert img.size == (96, 96)
    for img in load_image_set("medical", size=80, crop="resize"):
        assert img.size == (80, 80)


def test_native_crop_is_exact(base_sets):
    coffee = next(i for i in base_sets["natural"] if i.name == "coffee")  # 400×600
    got = image_by_name("natural:coffee", size=256, crop="native")
    assert torch.equal(got.hr, coffee.hr[:, 72:328, 172:428])
    small = image_by_name("medical:MR_small", size=96, crop="native")  # 64×64 is upscaled first
    assert small.size == (96, 96)


def test_multiple_crops_down(base_sets):
    for img, native in zip(load_image_set("natural", multiple=64), base_sets["natural"]):
        h, w = native.size
        assert img.size == (h // 64 * 64, w // 64 * 64)
        top, left = (h - img.size[0]) // 2, (w - img.size[1]) // 2
        assert torch.equal(img.hr, native.hr[:, top:top + img.size[0], left:left + img.size[1]])
    with pytest.raises(ValueError, match="smaller than multiple"):
        load_image_set("medical", multiple=128)  # MR_small is 64×64
    assert [i.size for i in load_image_set("phantoms", size=200, multiple=16)] == [(192, 192)] * 5


def test_limit_and_bad_arguments():
    assert [i.name for i in load_image_set("natural", limit=2)] == ["astronaut", "coffee"]
    with pytest.raises(ValueError, match="crop"):
        load_image_set("natural", size=64, crop="middle")
    with pytest.raises(ValueError, match="multiple"):
        load_image_set("natural", multiple=0)


# ----------------------------------------------------------------------------------------------------- phantoms

def test_phantom_deterministic_and_piecewise_constant():
    a, b = ct_phantom(96, seed=1), ct_phantom(96, seed=1)
    assert np.array_equal(a, b) and not np.array_equal(a, ct_phantom(96, seed=2))
    allowed = {-1000.0, -100.0, 40.0, -850.0, 700.0, 180.0} | {hu for hu, _ in phantoms.ORGAN_HU}
    for seed in range(6):
        values = set(np.unique(ct_phantom(64, seed)).tolist())
        assert values <= allowed and len(values) >= 4
    noisy = ct_phantom(96, seed=1, noise=10.0)
    assert np.array_equal(noisy, ct_phantom(96, seed=1, noise=10.0))
    assert 9.0 < float((noisy - a).std()) < 11.0


def test_phantom_lr_has_exactly_flat_blocks():
    """QDM's favourable case: at threshold 0 (strict, lossless mode) the flat regions of the noise-free phantoms'
    LR images give inactive mask bits, while a photograph is active almost everywhere."""
    from qdm.quadtree import quadtree_mask

    def density(hr: torch.Tensor) -> float:
        lr = lr_condition(degrade(hr, scale=4))  # 32×32 LR in [-1, 1]
        return float(quadtree_mask(lr[None], (16, 16), threshold=0.0).mean())  # one bit per 2×2 LR block

    for img in load_image_set("phantoms", size=128):
        assert img.size == (128, 128)
        if img.name != "ct_phantom_noisy":
            assert density(img.hr) < 0.8, img.name
    assert density(image_by_name("natural:astronaut", size=128).hr) > 0.95


# -------------------------------------------------------------------------------------------------- image_by_name

def test_image_by_name(base_sets):
    astronaut = image_by_name("natural:astronaut")
    assert astronaut.size == (512, 512) and astronaut.kind == "natural"
    assert torch.equal(astronaut.hr, base_sets["natural"][0].hr)
    assert image_by_name("medical:CT_small").kind == "ct"
    assert image_by_name("medical:ct_small").name == "CT_small"  # case-insensitive
    assert image_by_name("ct:CT_small").size == (128, 128)
    assert image_by_name("phantoms:shepp_logan").size == (256, 256)
    assert image_by_name("phantoms:shepp_logan", size=128).size == (128, 128)
    assert image_by_name("astronaut").name == "astronaut"  # bare names search builtin


def test_image_by_name_file(tmp_path):
    from skimage import io

    io.imsave(tmp_path / "x.png", np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1)), check_contrast=False)
    img = image_by_name(str(tmp_path / "x.png"), multiple=16)
    assert img.kind == "user" and img.size == (32, 32)


def test_image_by_name_unknown():
    with pytest.raises(ValueError, match="natural:astronaut"):
        image_by_name("natural:astronot")
    with pytest.raises(ValueError, match="natural:astronaut"):
        image_by_name("natral:astronaut")
    with pytest.raises(ValueError, match="unknown image"):
        image_by_name("no_such_image_anywhere")


# ---------------------------------------------------------------------------------------------------- degradation

def test_degrade_shapes_and_range():
    hr = torch.rand(3, 64, 48, generator=torch.Generator().manual_seed(0))
    lr = degrade(hr, scale=4)
    assert lr.shape == (3, 16, 12) and lr.dtype == torch.float32
    assert degrade(hr[None].repeat(2, 1, 1, 1), scale=2).shape == (2, 3, 32, 24)
    noisy = degrade(hr, scale=4, noise=0.5)
    assert float(noisy.min()) >= 0.0 and float(noisy.max()) <= 1.0
    with pytest.raises(ValueError, match="multiple of scale"):
        degrade(hr, scale=5)
    with pytest.raises(ValueError, match="noise"):
        degrade(hr, noise=-0.1)


def test_degrade_noise_is_seeded():
    hr = torch.full((3, 64, 64), 0.5)
    a, b = degrade(hr, noise=0.05, seed=3), degrade(hr, noise=0.05, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, degrade(hr, noise=0.05, seed=4))
    assert not torch.equal(a, degrade(hr))
    assert float((a - 0.5).std()) == pytest.approx(0.05, rel=0.1)


def test_degrade_constant_stays_constant():
    for c in (0.0, 0.37, 1.0):
        lr = degrade(torch.full((3, 32, 32), c), scale=4)
        assert torch.allclose(lr, torch.full_like(lr, c), atol=1e-6)


def test_degrade_samples_a_ramp_at_pixel_centres():
    """Symmetric normalised kernels reproduce a linear ramp at the LR pixel centres (away from the borders)."""
    s, w = 4, 64
    ramp = (torch.arange(w, dtype=torch.float64) / (w - 1)).expand(3, 16, w).float()
    lr = degrade(ramp, scale=s)
    centres = ((torch.arange(w // s) + 0.5) * s - 0.5) / (w - 1)
    torch.testing.assert_close(lr[0, 2, 2:-2], centres[2:-2].float(), atol=1e-5, rtol=0)


def test_lr_condition():
    lr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    cond = lr_condition(lr, 64)
    assert cond.shape == (2, 3, 64, 64) and float(cond.min()) >= -1 and float(cond.max()) <= 1
    assert lr_condition(lr[0], (32, 48)).shape == (3, 32, 48)
    assert torch.equal(lr_condition(lr), lr * 2 - 1)  # None keeps the LR size: only the mapping
    const = lr_condition(degrade(torch.full((3, 64, 64), 0.25)), 64)
    assert torch.allclose(const, torch.full_like(const, -0.5), atol=1e-6)
