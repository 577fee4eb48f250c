"""The upload gate without a server: every complete file it should accept reads back exactly, compressed or
not, whatever its name; what it must refuse, it refuses from the content."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.bench.hostile import nifti_header
from BackSplitLib.errors import ImageError
from BackSplitLib.image_files import (
    ImageTooLarge, TruncatedImage, UnsupportedImageFile, check_self_contained, inspect_received_image,
)
from BackSplitLib.io import read_received_image

TYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64, np.uint64, np.float32, np.float64]


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "compressed"])
@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".mha", ".seg.nrrd"])
@pytest.mark.parametrize("dtype", TYPES, ids=lambda d: np.dtype(d).name)
def test_complete_files_read_back_exactly(tmp_path, dtype, ext, compress):
    values = (np.arange(5 * 6 * 7) % 100).reshape(5, 6, 7).astype(dtype)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((0.5, 0.7, 2.0))
    path = tmp_path / f"x{ext}"
    sitk.WriteImage(image, str(path), compress)
    received = read_received_image(path, "x", 1 << 20)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(received.image), values)
    assert received.image.GetSpacing() == pytest.approx((0.5, 0.7, 2.0))


@pytest.mark.parametrize("ext", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("dtype", TYPES, ids=lambda d: np.dtype(d).name)
def test_every_pixel_type_cut_short_is_truncated(tmp_path, dtype, ext):
    values = (np.arange(6 * 7 * 8) % 50).reshape(6, 7, 8).astype(dtype)
    whole = tmp_path / f"whole{ext}"
    sitk.WriteImage(sitk.GetImageFromArray(values), str(whole), False)
    data = whole.read_bytes()
    if ext == ".nii.gz":
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        cut = gzip.compress(raw[: len(raw) - values.nbytes // 2])
    else:
        cut = data[: len(data) - values.nbytes // 2]
    (tmp_path / f"cut{ext}").write_bytes(cut)
    with pytest.raises(TruncatedImage, match=rf"truncated \({values.nbytes - values.nbytes // 2} of {values.nbytes} bytes\)"):
        read_received_image(tmp_path / f"cut{ext}", "x", 1 << 20)


def test_the_content_decides_not_the_name(tmp_path):
    image = sitk.GetImageFromArray(np.ones((3, 4, 5), np.int16))
    sitk.WriteImage(image, str(tmp_path / "a.nrrd"), True)
    (tmp_path / "a.nrrd").rename(tmp_path / "b.nii.gz")
    received = read_received_image(tmp_path / "b.nii.gz", "x", 1 << 20)
    assert received.header.format == "nrrd" and received.path.name == "b.nrrd"


def test_a_header_declaring_more_than_the_limit_is_too_large_before_any_read(tmp_path):
    path = tmp_path / "bomb.nii.gz"
    path.write_bytes(gzip.compress(bytes(nifti_header((1024, 1024, 1024)))))
    assert len(path.read_bytes()) < 100
    with pytest.raises(ImageTooLarge, match="1024x1024x1024 float32"):
        inspect_received_image(path, 2 << 30)


def test_a_gzip_stream_that_ends_early_is_truncated(tmp_path):
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(bytes(nifti_header((64, 64, 64))) + bytes(1000)))
    with pytest.raises(TruncatedImage, match=r"truncated \(1000 of 1048576 bytes\)"):
        inspect_received_image(path, 1 << 30)


def test_nan_in_float_nifti_is_found_while_streaming(tmp_path):
    values = np.zeros((4, 4, 4), np.float32)
    values[1, 2, 3] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(values), str(tmp_path / "nan.nii.gz"))
    with pytest.raises(ImageError, match="1 NaN or infinite"):
        inspect_received_image(tmp_path / "nan.nii.gz", 1 << 20)


@pytest.mark.parametrize("content", [b"", b"hello world", b"\x1f\x8b\x08\x00garbage", bytes(400),
                                     b"NRRD0004\ntype: float\n", b"ObjectType = Image\nNDims = 3\n"])
def test_junk_is_refused_without_a_traceback(tmp_path, content):
    (tmp_path / "junk.nii").write_bytes(content)
    with pytest.raises(ImageError):
        check_self_contained(tmp_path / "junk.nii")


def test_damaged_dimensions_are_refused(tmp_path):
    path = tmp_path / "neg.nii"
    path.write_bytes(bytes(nifti_header((10, -3, 10))) + bytes(100))
    with pytest.raises(UnsupportedImageFile, match="damaged NIfTI header"):
        check_self_contained(path)
