"""Issue 19, item 9: the engine's geometry checks, shared by the CLI (``io.read_image``) and the server's
upload gate: non-finite or non-positive spacing, spacing outside 0.0001-10000 mm, a non-finite origin and a
singular direction are refused with an error that names the part, never silently rewritten to 1.0 or 0."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from BackSplitLib.bench.hostile import metaimage_volume, nifti_volume
from BackSplitLib.errors import GeometryError
from BackSplitLib.image_geometry import check_geometry, resampled_voxels
from BackSplitLib.io import read_image

NAN = float("nan")
IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)

FILES = {
    "NaN pixdim": ("g.nii", nifti_volume(pixdim=(NAN, 1, 1)), "spacing"),
    "zero pixdim": ("g.nii", nifti_volume(pixdim=(1, 1, 0)), "spacing"),
    "NaN qoffset": ("g.nii", nifti_volume(qoffset=(0, NAN, 0)), "origin"),
    "NaN MetaImage Offset": ("g.mha", metaimage_volume("Offset = 0 0 nan"), "origin"),
    "MetaImage spacing 1e300": ("g.mha", metaimage_volume("ElementSpacing = 1 1e300 1"), "spacing"),
    "NaN MetaImage TransformMatrix": ("g.mha", metaimage_volume("TransformMatrix = nan 0 0 0 1 0 0 0 1"), "direction"),
}


@pytest.mark.parametrize("probe", list(FILES))
def test_the_cli_reader_refuses_what_the_image_readers_would_silently_repair(tmp_path, probe):
    name, content, part = FILES[probe]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(GeometryError, match=part):
        read_image(tmp_path / name)


def test_a_plain_file_reads_unchanged(tmp_path):
    (tmp_path / "g.nii").write_bytes(nifti_volume(pixdim=(0.7, 0.7, 2.5)))
    assert read_image(tmp_path / "g.nii").GetSpacing() == pytest.approx((0.7, 0.7, 2.5))


@pytest.mark.parametrize("spacing,origin,direction,part", [
    ((1, 0, 1), (0, 0, 0), IDENTITY, "spacing"),
    ((1, -1, 1), (0, 0, 0), IDENTITY, "spacing"),
    ((1, 1, float("inf")), (0, 0, 0), IDENTITY, "spacing"),
    ((1e-6, 1, 1), (0, 0, 0), IDENTITY, "spacing"),
    ((1, 1, 1), (0, float("inf"), 0), IDENTITY, "origin"),
    ((1, 1, 1), (0, 0, 0), (1, 0, 0, 1, 0, 0, 0, 0, 1), "singular direction"),
])
def test_check_geometry_names_the_part(spacing, origin, direction, part):
    with pytest.raises(GeometryError, match=part):
        check_geometry(spacing, origin, direction, "the image")


def test_resampled_voxels_is_the_physical_volume_over_the_target_voxel():
    image = sitk.Image([100, 50, 20], sitk.sitkUInt8)
    image.SetSpacing((1.0, 2.0, 5.0))
    assert resampled_voxels(image.GetSize(), image.GetSpacing(), (2.0, 2.0, 2.0)) == pytest.approx(100 * 50 * 20 * 10 / 8)
