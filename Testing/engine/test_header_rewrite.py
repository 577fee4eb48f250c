"""Issue 19 (critical): a received MetaImage / NRRD header can never make a reader open another file.

Two layers, each tested on its own: the gate refuses every spelling, duplicate and line trick that a reader
could take for a data file; and whatever the gate concludes, the reader opens a copy under a header BackSplit
wrote itself, so real files keep their voxels and geometry through that copy.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.image_files import (
    UnsupportedImageFile, check_self_contained, inspect_received_image, write_self_contained_copy,
)
from BackSplitLib.io import read_received_image

SECRET = "/etc/passwd"
META = "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\n"
NRRD = "NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n"

HOSTILE = {
    # the report's probe: MetaIO skips the lower-case key and reads the later exact one
    "mha lower-case LOCAL then the real key": META + f"elementdatafile = LOCAL\nHeaderSize = 0\nElementDataFile = {SECRET}\n",
    "mha upper-case variant": META + f"ELEMENTDATAFILE = LOCAL\nElementDataFile = {SECRET}\n",
    "mha key given twice": META + "NDims = 3\nElementDataFile = LOCAL\n",
    "mha carriage return inside a line": META + f"Comment = x\rElementDataFile = {SECRET}\nElementDataFile = LOCAL\n",
    "mha line without '='": META + f"Comment\nElementDataFile = LOCAL\n",
    "mha of another object type": META.replace("Image", "Mesh") + "ElementDataFile = LOCAL\n",
    "nrrd carriage return inside a line": NRRD + f"content: x\rdata file: {SECRET}\n\n",
    "nrrd data file behind ':='": NRRD + f"data file:\t{SECRET}:=\n\n",
    "nrrd upper-case field": NRRD + f"DATA FILE: {SECRET}\n\n",
    "nrrd underscore spelling": NRRD + f"data_file: {SECRET}\n\n",
    "nrrd data file as key:=value": NRRD + f"data file:={SECRET}\n\n",
    "nrrd field given twice": NRRD + "sizes: 4 4 4\n\n",
}


@pytest.mark.parametrize("probe", sorted(HOSTILE))
def test_every_header_trick_is_refused_before_a_reader_runs(tmp_path, probe):
    path = tmp_path / "upload.bin"
    path.write_bytes(HOSTILE[probe].encode("latin-1") + bytes(64))
    with pytest.raises(UnsupportedImageFile) as caught:
        read_received_image(path, "the upload", 1 << 20)
    assert SECRET not in str(caught.value) and "root" not in str(caught.value)


def test_the_reader_never_sees_the_clients_header(tmp_path):
    """Even a header the gate has accepted is not what ITK opens: the copy's header is BackSplit's own."""
    path = tmp_path / "i.mha"
    path.write_bytes((META + "Comment = ElementDataFile = /etc/passwd\nMyKey = x\nElementDataFile = LOCAL\n").encode()
                     + bytes(range(64)))
    header = check_self_contained(path)
    copy = write_self_contained_copy(path, header, tmp_path / "own.mha")
    text = copy.read_bytes()[:-64].decode()
    assert "Comment" not in text and "MyKey" not in text and SECRET not in text
    assert text.count("ElementDataFile") == 1 and text.endswith("ElementDataFile = LOCAL\n")
    assert copy.read_bytes()[-64:] == bytes(range(64))


def _oblique(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((-120.5, 33.25, 7.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))
    return image


@pytest.mark.parametrize("ext", [".mha", ".nrrd", ".nii.gz", ".seg.nrrd"])
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_real_files_keep_voxels_and_geometry_through_the_copy(tmp_path, ext, compress, dtype):
    array = (np.arange(5 * 6 * 7) % 97).reshape(5, 6, 7).astype(dtype)
    original = _oblique(array)
    path = tmp_path / f"written{ext}"
    sitk.WriteImage(original, str(path), compress)
    got = read_received_image(path, "the upload", 1 << 20).image
    np.testing.assert_array_equal(sitk.GetArrayFromImage(got), array)
    assert got.GetPixelID() == original.GetPixelID()
    np.testing.assert_allclose(got.GetSpacing(), original.GetSpacing())
    np.testing.assert_allclose(got.GetOrigin(), original.GetOrigin())
    np.testing.assert_allclose(got.GetDirection(), original.GetDirection(), atol=1e-12)


def test_a_seg_nrrds_segment_metadata_survives_the_copy(tmp_path):
    """The web app reads segment names from key:=value lines: they are carried over as they are."""
    image = _oblique(np.zeros((4, 4, 4), np.uint8))
    image.SetMetaData("Segment0_Name", "cyst")
    image.SetMetaData("Segment0_LabelValue", "1")
    path = tmp_path / "case.seg.nrrd"
    sitk.WriteImage(image, str(path), True)
    received = read_received_image(path, "the segmentation", 1 << 20)
    assert received.image.GetMetaData("Segment0_Name") == "cyst"
    assert received.image.GetMetaData("Segment0_LabelValue") == "1"


def test_the_gate_still_measures_the_copy(tmp_path):
    path = tmp_path / "i.nrrd"
    sitk.WriteImage(_oblique(np.ones((3, 4, 5), np.int16)), str(path), False)
    header = inspect_received_image(path, 1 << 20)
    copy = write_self_contained_copy(path, header, tmp_path / "own.nrrd")
    assert check_self_contained(copy).sizes == header.sizes == (5, 4, 3)
