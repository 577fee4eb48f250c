"""Prediction returns masks in the input's exact geometry, whatever that geometry is."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.dataset import Dataset
from BackSplitLib.errors import ImageError, RunError
from BackSplitLib.inference import Predictor
from BackSplitLib.io import check_same_geometry, read_image, write_image


@pytest.fixture(scope="module")
def predictor(backsplit_run):
    return Predictor.from_run(backsplit_run, device="cpu")


@pytest.fixture(scope="module")
def test_image(phantom_dataset):
    return sitk.ReadImage(str(Dataset.load(phantom_dataset).test[0].image))


def _reoriented(image: sitk.Image) -> sitk.Image:
    """The same anatomy on an oblique, anisotropic, flipped grid."""
    flipped = sitk.Flip(image, [True, False, True])
    rotation = sitk.VersorTransform((0, 0, 1), 0.35)
    rotation.SetCenter(image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()]))
    direction = np.asarray(rotation.GetMatrix()).reshape(3, 3) @ np.asarray(flipped.GetDirection()).reshape(3, 3)
    reference = sitk.Image([36, 30, 20], sitk.sitkFloat32)
    reference.SetSpacing((1.9, 2.1, 3.4))
    reference.SetDirection(direction.flatten().tolist())
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([s / 2 for s in image.GetSize()]))
    half = direction @ (np.asarray(reference.GetSize()) * np.asarray(reference.GetSpacing()) / 2)
    reference.SetOrigin((centre - half).tolist())
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, -1000.0)


def test_mask_has_the_input_geometry_and_binary_values(predictor, test_image):
    result = predictor.predict(test_image, probabilities=True, classes=True)
    for output in (result.mask, result.probability, result.classes):
        check_same_geometry(test_image, output, "input", "output")
    mask = sitk.GetArrayFromImage(result.mask)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    probability = sitk.GetArrayFromImage(result.probability)
    assert probability.dtype == np.float32 and probability.min() >= 0 and probability.max() <= 1
    np.testing.assert_array_equal(mask, (probability >= 0.5).astype(np.uint8))


def test_class_map_agrees_with_the_collapsed_mask(predictor, test_image):
    result = predictor.predict(test_image, classes=True)
    classes = sitk.GetArrayFromImage(result.classes)
    mask = sitk.GetArrayFromImage(result.mask)
    target = predictor.schema.target_value
    # Both come from the same probabilities; they may differ only where nearest and linear resampling
    # disagree at a boundary.
    assert np.mean((classes == target) != (mask == 1)) < 0.01
    assert set(np.unique(classes)) <= set(predictor.schema.labels.values())


def test_oblique_flipped_anisotropic_input_gets_a_mask_on_its_own_grid(predictor, test_image):
    moved = _reoriented(test_image)
    result = predictor.predict(moved)
    check_same_geometry(moved, result.mask, "input", "mask")


def test_preprocessing_and_its_inverse_map_every_grid_back_onto_itself(predictor, test_image):
    # What the network sees (reoriented to RAS, resampled, normalised), mapped back through the same
    # inverse the predictor uses for its outputs, lands on the input's voxels: the pipeline works in
    # physical space, not in index space, for flipped and oblique grids alike.
    from BackSplitLib.transforms import sitk_from_array

    for image in (test_image, _reoriented(test_image)):
        prepared = predictor.preprocess(image)
        network_view = sitk_from_array(prepared[0].numpy(), prepared.affine)
        back = sitk.Resample(network_view, image, sitk.Transform(), sitk.sitkLinear, np.nan, sitk.sitkFloat32)
        lo, hi = predictor.info.preprocessing["normalization"]["clip"]
        a, b = np.clip(sitk.GetArrayFromImage(image), lo, hi), sitk.GetArrayFromImage(back)
        inside = np.isfinite(b)
        assert inside.mean() > 0.9
        assert np.corrcoef(a[inside], b[inside])[0, 1] > 0.98  # two linear interpolations on the oblique grid


@pytest.mark.parametrize("ext, expected", [(".nii.gz", ".nii.gz"), (".nrrd", ".nrrd")])
def test_predict_file_names_outputs_after_the_case_and_follows_the_format(predictor, test_image, tmp_path, ext, expected):
    source = write_image(test_image, tmp_path / f"abdomen_0000{ext}")
    outputs = predictor.predict_file(source, tmp_path / "out", probabilities=True, classes=True)
    assert {p.name for p in outputs.values()} == {f"abdomen{expected}", f"abdomen_prob{expected}",
                                                   f"abdomen_classes{expected}"}
    check_same_geometry(read_image(source), read_image(outputs["mask"]), "input", "mask")


def test_bad_inputs(predictor, tmp_path):
    flat = sitk.GetImageFromArray(np.zeros((20, 20), np.float32))
    with pytest.raises(ImageError, match="2D"):
        predictor.predict(flat)
    nan = sitk.GetImageFromArray(np.full((8, 8, 8), np.nan, np.float32))
    with pytest.raises(ImageError, match="NaN"):
        predictor.predict(nan)
    with pytest.raises(RunError, match="not a BackSplit run folder"):
        Predictor.from_run(tmp_path)
