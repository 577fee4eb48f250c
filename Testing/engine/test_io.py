"""Image I/O and the geometry rule, on real files: NIfTI, NRRD and DICOM series, oblique and anisotropic."""

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.errors import GeometryError, ImageError
from BackSplitLib.io import (
    Geometry, case_name, check_same_geometry, output_extension, read_image, resample_like, write_image,
)


def oblique_image(size=(12, 10, 8), spacing=(0.8, 1.1, 3.0), angle=0.3, tilt=0.2, dtype=np.int16, seed=0):
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(-100, 200, size[::-1]).astype(dtype))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 40.25, 7.0))
    c, s, ct, st = np.cos(angle), np.sin(angle), np.cos(tilt), np.sin(tilt)
    rotation = np.array([[1, 0, 0], [0, ct, -st], [0, st, ct]]) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    image.SetDirection(rotation.flatten().tolist())
    return image


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha"])
def test_round_trip_keeps_voxels_and_geometry_on_oblique_anisotropic_images(tmp_path, ext):
    image = oblique_image()
    path = write_image(image, tmp_path / f"case{ext}")
    back = read_image(path)
    check_same_geometry(image, back)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_dicom_series_folder_is_read_as_one_volume(tmp_path):
    image = sitk.Cast(oblique_image(angle=0.0, tilt=0.0, spacing=(0.7, 0.7, 2.5)), sitk.sitkInt16)
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        slice_.SetMetaData("0020|0013", str(z + 1))
        slice_.SetMetaData("0020|0032", "\\".join(map(str, image.TransformIndexToPhysicalPoint((0, 0, z)))))
        slice_.SetMetaData("0020|000e", "1.2.826.0.1.3680043.2.1125.1")
        slice_.SetMetaData("0008|0060", "CT")
        writer.SetFileName(str(folder / f"{z:03d}.dcm"))
        writer.Execute(slice_)
    back = read_image(folder)
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), rtol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert output_extension(folder) == ".nii.gz"


def test_geometry_rule_tolerances():
    image = oblique_image()
    g = Geometry.of(image)
    nudged = Geometry(g.size, tuple(s * (1 + 5e-5) for s in g.spacing),
                      tuple(o + 0.5e-3 * min(g.spacing) for o in g.origin), g.direction)
    assert g.mismatch(nudged) is None
    assert g.mismatch(Geometry(g.size, tuple(s * 1.001 for s in g.spacing), g.origin, g.direction)) == "spacing"
    assert g.mismatch(Geometry(g.size, g.spacing, tuple(o + 0.01 for o in g.origin), g.direction)) == "origin"
    assert g.mismatch(Geometry(g.size, g.spacing, g.origin, tuple(d + 1e-3 for d in g.direction))) == "direction"
    assert g.mismatch(Geometry((1, 2, 3), g.spacing, g.origin, g.direction)) == "size"


def test_mismatch_error_prints_both_geometries_and_the_fix():
    a = oblique_image()
    b = oblique_image(spacing=(0.8, 1.1, 2.0))
    with pytest.raises(GeometryError) as info:
        check_same_geometry(a, b, "image x.nii.gz", "label y.nii.gz")
    message = str(info.value)
    assert "spacing differs" in message and "(0.8, 1.1, 3)" in message and "(0.8, 1.1, 2)" in message
    assert "--resample-labels" in message


def test_resample_like_maps_a_flipped_label_back_in_physical_space():
    label = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6))
    label.SetSpacing((1.0, 2.0, 3.0))
    flipped = sitk.Flip(label, [True, False, True])  # same physical content, flipped index axes
    assert not np.array_equal(sitk.GetArrayFromImage(flipped), sitk.GetArrayFromImage(label))
    back = resample_like(flipped, label)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(label))


@pytest.mark.parametrize("name, expected", [
    ("imagesTr/case_001_0000.nii.gz", "case_001"), ("x/liver.nrrd", "liver"), ("a.seg.nrrd", "a"), ("b_0000.mha", "b"),
])
def test_case_names_drop_extension_and_channel_suffix(name, expected):
    assert case_name(name) == expected


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        read_image(tmp_path / "missing.nii.gz")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ImageError, match="not a supported image file"):
        read_image(text)
    fake = tmp_path / "fake.nii.gz"
    fake.write_bytes(b"definitely not gzip")
    with pytest.raises(ImageError, match="could not be read"):
        read_image(fake)
    flat = write_image(sitk.GetImageFromArray(np.zeros((5, 6), np.float32)), tmp_path / "flat.nii.gz")
    with pytest.raises(ImageError, match="2D"):
        read_image(flat)
    four = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))] * 2)
    with pytest.raises(ImageError, match="4D"):
        read_image(write_image(four, tmp_path / "four.nii.gz"))
    nan = np.zeros((3, 4, 5), np.float32)
    nan[1, 1, 1] = np.nan
    nan[2, 2, 2] = np.inf
    with pytest.raises(ImageError, match="2 NaN or infinite"):
        read_image(write_image(sitk.GetImageFromArray(nan), tmp_path / "nan.nrrd"))
    # ITK's NIfTI reader zeroes NaN/inf; the check must still see them.
    nibabel.save(nibabel.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(ImageError, match="2 NaN or infinite"):
        read_image(tmp_path / "nan.nii.gz")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(ImageError, match="no DICOM series"):
        read_image(empty_dir)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    write_image(oblique_image(), tmp_path / "out" / "a.nii.gz")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz"]
