"""``backsplit auxiliary`` and ``backsplit advise``: outputs, and one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib import auxiliary as aux
from BackSplitLib.schema import LabelSchema


def _one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.startswith("error:") and err.strip().count("\n") == 0, err
    for fragment in fragments:
        assert fragment in err, err


def test_ct_tissues_writes_the_label_and_a_matching_schema(cli, tmp_path, totalseg_reference):
    out, schema_out = tmp_path / "aux.nii.gz", tmp_path / "schema.json"
    code, stdout, _ = cli("auxiliary", totalseg_reference.ct, "--ct-tissues", "--out", out, "--schema-out", schema_out,
                          "--hu", "bone=300:")
    assert code == 0 and "soft_tissue" in stdout
    schema = LabelSchema.load(schema_out)
    assert schema.target == "lesion" and schema.auxiliary_names == ["lung_air", "fat", "soft_tissue", "bone"]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    schema.check_label_values(label)
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(totalseg_reference.ct)))
    assert ct[label == schema.labels["bone"]].min() >= 300


def test_import_with_auto_names_writes_the_selected_structures(cli, tmp_path, totalseg_reference):
    out = tmp_path / "organs.nrrd"
    code, stdout, _ = cli("auxiliary", totalseg_reference.ct, "--import", totalseg_reference.seg, "--names", "auto",
                          "--structures", "liver,kidneys", "--out", out, "--schema-out", tmp_path / "s.json")
    assert code == 0 and "NIfTI label table" in stdout
    schema = LabelSchema.load(tmp_path / "s.json")
    assert schema.auxiliary_names == ["liver", "kidney_left", "kidney_right"]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(totalseg_reference.seg)))
    np.testing.assert_array_equal(label == schema.labels["liver"], seg == 5)


def test_mr_classes_from_the_command_line(cli, tmp_path, totalseg_reference):
    code, stdout, _ = cli("auxiliary", totalseg_reference.mr, "--mr-classes", "3", "--mr-method", "kmeans",
                          "--out", tmp_path / "mr.nii.gz")
    assert code == 0 and "mr_class_3" in stdout


def test_missing_image_is_a_one_line_error(cli, tmp_path):
    code, _, err = cli("auxiliary", tmp_path / "nope.nii.gz", "--ct-tissues", "--out", tmp_path / "a.nii.gz")
    _one_line_error(code, err, "nope.nii.gz does not exist")


def test_missing_organ_map_is_a_one_line_error(cli, tmp_path, totalseg_reference):
    code, _, err = cli("auxiliary", totalseg_reference.ct, "--import", tmp_path / "organs.nii.gz",
                       "--structures", "liver", "--out", tmp_path / "a.nii.gz")
    _one_line_error(code, err, "organ map", "organs.nii.gz does not exist")


def test_unknown_structure_is_a_one_line_error_with_suggestions(cli, tmp_path, totalseg_reference):
    code, _, err = cli("auxiliary", totalseg_reference.ct, "--import", totalseg_reference.seg,
                       "--structures", "liver,kidny_left", "--out", tmp_path / "a.nii.gz")
    _one_line_error(code, err, "unknown structure 'kidny_left'", "did you mean kidney_left", "groups:")
    assert not (tmp_path / "a.nii.gz").exists()


def test_missing_names_file_is_a_one_line_error(cli, tmp_path, totalseg_reference):
    code, _, err = cli("auxiliary", totalseg_reference.ct, "--import", totalseg_reference.seg, "--names",
                       tmp_path / "names.json", "--structures", "liver", "--out", tmp_path / "a.nii.gz")
    _one_line_error(code, err, "names file", "names.json does not exist")


@pytest.mark.parametrize("args, fragment", [
    (["--ct-tissues", "--mr-classes", "3"], "choose exactly one of"),
    ([], "choose exactly one of"),
    (["--mr-classes", "12"], "between 2 and 8"),
    (["--import", "x.nii.gz"], "--import needs --structures"),
    (["--from", "nnunet", "--structures", "liver"], "unknown tool 'nnunet'"),
])
def test_options_that_do_not_fit_together_are_one_line_errors(cli, tmp_path, totalseg_reference, args, fragment):
    code, _, err = cli("auxiliary", totalseg_reference.ct, *args, "--out", tmp_path / "a.nii.gz")
    _one_line_error(code, err, fragment)


def test_totalsegmentator_not_installed_says_what_to_install(cli, tmp_path, totalseg_reference, monkeypatch):
    monkeypatch.setattr(aux.totalsegmentator, "totalsegmentator_package_dir", lambda: None)
    code, _, err = cli("auxiliary", totalseg_reference.ct, "--from", "totalsegmentator", "--structures", "liver",
                       "--out", tmp_path / "a.nii.gz")
    _one_line_error(code, err, "TotalSegmentator is not installed", "pip install TotalSegmentator",
                    "totalseg_download_weights -t total", "never downloads")


@pytest.fixture
def fake_totalsegmentator(tmp_path, totalseg_reference, monkeypatch) -> Path:
    """A stand-in 'totalsegmentator' package (real class table; its CLI copies the reference segmentation,
    keeping the requested structures) and a weights folder; returns the weights folder (empty at first)."""
    package = tmp_path / "site" / "totalsegmentator"
    (package / "bin").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "bin" / "__init__.py").write_text("")
    shutil.copy(totalseg_reference.map_to_binary, package / "map_to_binary.py")
    (package / "bin" / "TotalSegmentator.py").write_text(textwrap.dedent(f"""
        import argparse, numpy as np, SimpleITK as sitk
        from pathlib import Path
        from BackSplitLib.auxiliary import totalsegmentator_class_map
        p = argparse.ArgumentParser()
        p.add_argument("-i"); p.add_argument("-o"); p.add_argument("--ml", action="store_true")
        p.add_argument("--roi_subset", nargs="+"); p.add_argument("--device")
        p.add_argument("--fast", action="store_true")
        a = p.parse_args()
        table = {{n: v for v, n in totalsegmentator_class_map(Path(__file__).parents[1] / "map_to_binary.py").items()}}
        seg = sitk.ReadImage({str(totalseg_reference.seg)!r})
        array = sitk.GetArrayFromImage(seg)
        keep = np.isin(array, [table[n] for n in a.roi_subset])
        out = sitk.GetImageFromArray(np.where(keep, array, 0).astype(np.uint8)); out.CopyInformation(seg)
        sitk.WriteImage(out, a.o)
    """))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(weights))
    return weights


def test_totalsegmentator_without_weights_says_how_to_get_them(cli, tmp_path, totalseg_reference,
                                                                 fake_totalsegmentator):
    code, _, err = cli("auxiliary", totalseg_reference.ct, "--from", "totalsegmentator", "--structures", "liver",
                       "--out", tmp_path / "a.nii.gz")
    _one_line_error(code, err, "weights are missing", "Dataset291", "totalseg_download_weights -t total")


def test_totalsegmentator_unknown_structure_is_checked_before_running(cli, tmp_path, totalseg_reference,
                                                                      fake_totalsegmentator):
    code, _, err = cli("auxiliary", totalseg_reference.ct, "--from", "totalsegmentator", "--structures", "livers",
                       "--out", tmp_path / "a.nii.gz")
    _one_line_error(code, err, "unknown structure 'livers'", "TotalSegmentator's 'total' task")


def test_totalsegmentator_runs_when_installed_with_weights(cli, tmp_path, totalseg_reference, fake_totalsegmentator):
    for dataset_id in aux.TOTALSEG_WEIGHTS["fast"]:
        (fake_totalsegmentator / f"Dataset{dataset_id}_TotalSegmentator").mkdir()
    out = tmp_path / "ts.nii.gz"
    code, _, err = cli("auxiliary", totalseg_reference.ct, "--from", "totalsegmentator", "--fast", "--device", "cpu",
                       "--structures", "liver,kidneys", "--out", out)
    assert code == 0, err
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(totalseg_reference.seg)))
    np.testing.assert_array_equal(label == 1, seg == 5)
    np.testing.assert_array_equal(label == 2, seg == 3)  # kidney_left
    assert "totalsegmentator" not in sys.modules


def test_dataset_mode_from_the_command_line(cli, tmp_path, totalseg_reference):
    from BackSplitLib.dataset import Dataset, write_dataset_json

    root = tmp_path / "Dataset003"
    ct = sitk.ReadImage(str(totalseg_reference.ct))
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    sitk.WriteImage(ct, str(root / "imagesTr" / "a_0000.nii.gz"))
    label = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    label.CopyInformation(ct)
    label[60, 50, 15] = 1
    sitk.WriteImage(label, str(root / "labelsTr" / "a.nii.gz"))
    write_dataset_json(root, LabelSchema.binary_schema("lesion"), 1)
    code, stdout, err = cli("auxiliary", "--dataset", root, "--ct-tissues")
    assert code == 0, err
    assert "lung_air" in stdout
    assert Dataset.load(root).schema.auxiliary_names == ["lung_air", "fat", "soft_tissue", "bone"]
    code, _, err = cli("auxiliary", "--dataset", root, "--import", totalseg_reference.seg, "--structures", "liver")
    _one_line_error(code, err, "--dataset supports --ct-tissues and --mr-classes")


def test_advise_ranks_and_writes_json_for_the_slicer_module(cli, tmp_path, monkeypatch):
    phantom = pytest.importorskip("BackSplitLib.phantom")
    root = phantom.write_phantom_dataset(tmp_path / "Dataset004_Phantom", cases=3, test_cases=0, seed=3,
                                         shape=(24, 40, 48))
    run = tmp_path / "run"
    run.mkdir()

    class IntensityPredictor:
        """A 'binary model' that calls every lesion-like intensity a lesion (so it takes the mimics too)."""

        @classmethod
        def from_run(cls, run_dir, device="auto"):
            assert Path(run_dir) == run
            return cls()

        def predict(self, image, probabilities=False, classes=False):
            smooth = sitk.Median(image, [1, 1, 1])
            mask = sitk.Cast((smooth >= 5) & (smooth <= 35), sitk.sitkUInt8)
            mask = sitk.BinaryMorphologicalOpening(mask, [1, 1, 1])
            return types.SimpleNamespace(mask=mask)

    monkeypatch.setitem(sys.modules, "BackSplitLib.inference",
                        types.SimpleNamespace(Predictor=IntensityPredictor))
    code, stdout, err = cli("advise", run, root, "--json", tmp_path / "advice.json")
    assert code == 0, err
    assert "recommended auxiliary set" in stdout
    assert "has not been shown" in " ".join(stdout.split())  # no benefit claimed that the benchmarks lack
    advice = json.loads((tmp_path / "advice.json").read_text())
    assert advice["cases"] == 3 and advice["false_positive_components"] > 0
    sources = {s["name"]: s["source"] for s in advice["structures"]}
    assert sources["liver"] == "dataset" and sources["soft_tissue"] == "tissue"
    assert advice["recommended"] and all(sources[n] for n in advice["recommended"])


def test_advise_with_a_missing_run_is_a_one_line_error(cli, tmp_path):
    code, _, err = cli("advise", tmp_path / "no-run", tmp_path / "no-dataset")
    _one_line_error(code, err, "run folder", "no-run does not exist")


@pytest.mark.slow  # trains the shared tiny binary run when no other suite has (about 40 s on 2 cores)
def test_advise_with_a_real_binary_run(cli, tmp_path, binary_run, phantom_dataset):
    """End to end with the engine's Predictor on a tiny trained binary run (a working run, not a good model)."""
    pytest.importorskip("BackSplitLib.inference")
    code, _, err = cli("advise", binary_run, phantom_dataset, "--json", tmp_path / "advice.json", "--device", "cpu")
    assert code == 0, err
    advice = json.loads((tmp_path / "advice.json").read_text())
    assert advice["cases"] == 5 and advice["lesions"] > 0
    assert {s["name"] for s in advice["structures"]} >= {"liver", "bowel", "soft_tissue"}
