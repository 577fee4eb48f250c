"""The web app's rules without a browser: streamed uploads, bounded DICOM zips, the gate's checks, the token.

Real files and real SimpleITK reads; the Origin / Host / secret checks of :class:`Gate` on plain values.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitWeb.login import startup_token, take_startup_token
from BackSplitWeb.policy import RpcPolicy
from BackSplitWeb.security import Gate, is_loopback, new_secret
from BackSplitWeb.uploads import StreamedFile, UploadError, extract_dicom_zip, received_image


# ------------------------------------------------------------------------------------------ uploads
def test_a_streamed_file_stops_at_its_limit_and_leaves_nothing(tmp_path):
    target = StreamedFile(tmp_path / "upload.nii", max_bytes=10)
    target.write(b"12345")
    with pytest.raises(UploadError) as refused:
        target.write(b"678901")
    assert refused.value.status == 413
    assert not (tmp_path / "upload.nii").exists()


def test_an_empty_upload_is_refused(tmp_path):
    with pytest.raises(UploadError, match="empty"):
        StreamedFile(tmp_path / "upload.nii", max_bytes=10).close()


def _dicom_series(folder: Path, slices: int = 4) -> list[Path]:
    """A real DICOM series written by SimpleITK (one file per slice)."""
    folder.mkdir(parents=True, exist_ok=True)
    volume = sitk.GetImageFromArray(np.arange(slices * 8 * 8, dtype=np.int16).reshape(slices, 8, 8))
    volume.SetSpacing((0.8, 0.8, 2.0))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for z in range(slices):
        image = volume[:, :, z]
        for tag, value in (("0020|000d", "1.2.3"), ("0020|000e", "1.2.3.4"), ("0008|0060", "CT"),
                           ("0020|0032", f"0\\0\\{2.0 * z}"), ("0020|0013", str(z + 1)),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", "0.8\\0.8")):
            image.SetMetaData(tag, value)
        path = folder / f"slice{z}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(image)
        paths.append(path)
    return paths


def test_a_dicom_zip_becomes_one_volume(tmp_path):
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in _dicom_series(tmp_path / "dicom"):
            zf.write(path, f"patient/series/{path.name}")
    image = received_image(archive, tmp_path / "work", max_bytes=1 << 20)
    assert image.GetSize() == (8, 8, 4)
    assert image.GetSpacing()[2] == pytest.approx(2.0)


@pytest.mark.parametrize("member", ["../evil.dcm", "/etc/evil.dcm", "a/../../evil.dcm", "C:/evil.dcm"])
def test_a_zip_member_outside_the_folder_is_refused(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(member, b"x")
    with pytest.raises(UploadError, match="outside"):
        extract_dicom_zip(archive, tmp_path / "out", max_bytes=1 << 20)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.dcm").exists()


def test_a_zip_with_a_symbolic_link_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("link.dcm")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UploadError, match="symbolic link"):
        extract_dicom_zip(archive, tmp_path / "out", max_bytes=1 << 20)


def test_a_zip_bomb_is_stopped_by_its_expanded_size(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.dcm", b"\0" * (4 << 20))
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(UploadError) as refused:
        extract_dicom_zip(archive, tmp_path / "out", max_bytes=1 << 20)
    assert refused.value.status == 413
    assert not (tmp_path / "out").exists()


def test_a_zip_with_too_many_members_is_refused(tmp_path):
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(11):
            zf.writestr(f"{i}.dcm", b"x")
    with pytest.raises(UploadError, match="11 files"):
        extract_dicom_zip(archive, tmp_path / "out", max_bytes=1 << 20, max_members=10)


def test_a_file_that_is_no_image_is_refused(tmp_path):
    path = tmp_path / "upload.bin"
    path.write_bytes(b"not an image at all")
    with pytest.raises(UploadError) as refused:
        received_image(path, tmp_path, max_bytes=1 << 20)
    assert refused.value.status == 415


def test_a_metaimage_naming_another_file_is_refused_by_the_engine_gate(tmp_path):
    """The detached-data attack of the server issue, through the web app's upload path."""
    path = tmp_path / "upload.mha"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
                    "ElementDataFile = /etc/passwd\n")
    with pytest.raises(UploadError) as refused:
        received_image(path, tmp_path, max_bytes=1 << 20)
    assert refused.value.status == 415
    assert "root:" not in str(refused.value)


# ------------------------------------------------------------------------------------------ the gate
def test_loopback_names():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.1.2.3", "example.org", ""))


def test_the_origin_must_be_this_apps_own():
    assert Gate.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not Gate.origin_allowed("http://evil.example", "127.0.0.1:8080")
    assert not Gate.origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080")
    assert not Gate.origin_allowed(None, "127.0.0.1:8080")
    assert not Gate.origin_allowed("null", "127.0.0.1:8080")


def test_on_loopback_only_loopback_host_headers_are_answered():
    gate = Gate(new_secret(), "127.0.0.1")
    assert gate.host_allowed("127.0.0.1:8080") and gate.host_allowed("localhost:8080")
    assert gate.host_allowed("[::1]:8080")
    assert not gate.host_allowed("attacker.example:8080")  # DNS rebinding
    assert Gate(new_secret(), "0.0.0.0").host_allowed("workstation.hospital.org:8080")


def test_the_launch_secret_is_random_and_compared_exactly():
    first, second = new_secret(), new_secret()
    assert first != second and len(first) > 30 and first[0].isalpha()
    gate = Gate(first, "127.0.0.1")
    assert gate.secret_ok(first)
    assert not gate.secret_ok(second) and not gate.secret_ok("") and not gate.secret_ok(None)


# ------------------------------------------------------------------------------------------ the token
def test_the_environment_token_is_used_only_on_loopback():
    env = {"BACKSPLIT_TOKEN": "t0ken"}
    assert startup_token("127.0.0.1", env) == "t0ken"
    assert startup_token("localhost", env) == "t0ken"
    assert startup_token("0.0.0.0", env) is None
    assert startup_token("10.0.0.5", env) is None
    assert startup_token("127.0.0.1", {}) is None


def test_the_environment_token_is_taken_once_and_removed():
    env = {"BACKSPLIT_TOKEN": "t0ken", "OTHER": "kept"}
    assert take_startup_token("127.0.0.1", env) == "t0ken"
    assert env == {"OTHER": "kept"}
    env = {"BACKSPLIT_TOKEN": "t0ken"}
    assert take_startup_token("0.0.0.0", env) is None and env == {}  # ignored, and removed all the same


def test_the_token_leaves_proc_self_environ():
    """``del os.environ[...]`` leaves the exec-time block that /proc/self/environ shows; the scrub does not."""
    script = ("import os; from pathlib import Path; from BackSplitWeb.login import take_startup_token\n"
              "before = Path('/proc/self/environ').read_bytes()\n"
              "token = take_startup_token('127.0.0.1')\n"
              "after = Path('/proc/self/environ').read_bytes()\n"
              "print(token, b'sekrit-42' in before, b'sekrit-42' in after, b'KEEP=me' in after,"
              " 'BACKSPLIT_TOKEN' in os.environ)")
    env = {**os.environ, "BACKSPLIT_TOKEN": "sekrit-42", "KEEP": "me"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["sekrit-42", "True", "False", "True", "False"]


# ------------------------------------------------------------------------------- what a page may call
def _policy(signed_in: bool) -> RpcPolicy:
    return RpcPolicy(lambda: signed_in)


def test_before_sign_in_a_page_may_only_sign_in():
    policy = _policy(False)
    assert policy.filter("trame.trigger", ["backsplit_login", ["t"], {}]) is not None
    for name in ("bs_action", "bs_open_case", "bs_list_cases", "trigger__12"):
        assert policy.filter("trame.trigger", [name, [], {}]) is None
    assert policy.filter("trame.rca.event", ["view", "origin", {}]) is None
    assert policy.filter("trame.state.update", [[{"key": "segment_editor_active", "value": 1}]]) == [[]]


def test_no_state_key_of_the_app_is_writable_by_a_page():
    changes = [{"key": "bs_logged_in", "value": True}, {"key": "bs_ticket", "value": "x"},
               {"key": "bs_panel", "value": {}}, {"key": "layout_slice_opacity", "value": 0.5}, "junk", {"value": 1}]
    assert _policy(True).filter("trame.state.update", [changes]) == [[{"key": "layout_slice_opacity", "value": 0.5}]]
    assert _policy(False).filter("trame.state.update", [changes]) == [[]]


@pytest.mark.parametrize("signed_in", [False, True])
def test_lifecycle_and_exit_rpcs_a_page_may_not_use(signed_in):
    policy = _policy(signed_in)
    for name in ("server_ready", "server_bind", "server_start", "server_exited", "exception", "error"):
        assert policy.filter("trame.lifecycle.update", [name]) is None
    assert policy.filter("trame.lifecycle.update", ["client_connected"]) == ["client_connected"]
    for method in ("application.exit", "application.exit.later", "some.future.rpc"):
        assert policy.filter(method, []) is None


def test_signed_in_a_page_uses_the_views_and_every_trigger():
    policy = _policy(True)
    assert policy.filter("trame.rca.event", ["view", "o", {}]) == ["view", "o", {}]
    assert policy.filter("trame.trigger", ["trigger__3", [], {}]) is not None


def _rle_bomb(folder: Path, slices: int = 3, side: int = 1024) -> list[Path]:
    """A real DICOM series of RLE Lossless slices that are all zeros: a few kilobytes per file on disk,
    ``side`` x ``side`` x 2 bytes (2 MiB at 1024, 32 MiB at 4096) per slice once decoded."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series, study, paths = generate_uid(), generate_uid(), []
    for z in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.Modality = CTImageStorage, "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, z + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, 2.0 * z], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.0
        ds.Rows = ds.Columns = side
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = np.zeros((side, side), np.int16).tobytes()
        ds.compress(RLELossless)
        path = folder / f"bomb{z}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_a_dicom_zip_that_declares_more_voxels_than_the_limit_is_refused_before_decoding(tmp_path):
    # issue 19's follow-up: the zip is tiny, its headers declare 6 MiB of voxels; GDCM reads the headers
    # (the reader that would decode them) and the series is refused before a pixel is decoded.
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _rle_bomb(tmp_path / "dicom"):
            zf.write(path, f"series/{path.name}")
    assert archive.stat().st_size < 64 << 10
    with pytest.raises(UploadError, match="declares more than") as refused:
        received_image(archive, tmp_path / "work", max_bytes=4 << 20)
    assert refused.value.status == 413 and str(tmp_path) not in str(refused.value)
    # the same honest series within the limit decodes (the check counts what GDCM will allocate)
    image = received_image(archive, tmp_path / "work", max_bytes=8 << 20)
    assert image.GetSize() == (1024, 1024, 3)
