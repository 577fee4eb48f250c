"""Prediction: MONAI sliding-window inference, collapse to the lesion, back to the input's geometry.

The network's class probabilities are collapsed to one target probability *inside each window*
(``P(target) / sum of all classes``), so memory does not grow with the number of auxiliary classes and
no full-size multi-class volume is accumulated unless the class map is asked for. The target
probability is resampled onto the input grid in physical space (linear) and thresholded at 0.5, so the
mask has exactly the input's size, spacing, origin and direction whatever the preprocessing did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.inferers import sliding_window_inference

from BackSplitLib import runs as runfiles
from BackSplitLib.devices import resolve_device
from BackSplitLib.io import (
    case_name, check_3d, check_finite, image_from_array, output_extension, read_image, write_image,
)
from BackSplitLib.schema import LabelSchema
from BackSplitLib.transforms import inference_transforms, metatensor_from_sitk, sitk_from_array

# MONAI's default overlap: with Gaussian blending it costs far fewer windows than nnU-Net's 0.5 for
# nearly the same result (NOTES: small windows at 50 % overlap dominate prediction time on CPU).
DEFAULT_OVERLAP = 0.25
SW_BATCH_SIZE = 4


@dataclass
class Prediction:
    mask: sitk.Image
    probability: sitk.Image | None = None
    classes: sitk.Image | None = None


def _collapsed(model: torch.nn.Module, schema: LabelSchema, full: bool):
    """Window function for the sliding-window inferer: softmax, then the target's share (1 channel)
    unless the full class probabilities are needed."""
    target = schema.target_value

    def forward(window: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(model(window).float(), dim=1)
        if full:
            return probabilities
        # softmax sums to 1, so P(target) is already the target's share of all split classes.
        return probabilities[:, target : target + 1]

    return forward


def sliding_window_target_probability(model, image: torch.Tensor, schema: LabelSchema, patch_size,
                                      amp: bool = False, overlap: float = DEFAULT_OVERLAP, full: bool = False,
                                      sw_batch_size: int = SW_BATCH_SIZE) -> torch.Tensor:
    """(B, 1 or C, X, Y, Z) probabilities over a preprocessed (B, 1, X, Y, Z) image, Gaussian-blended."""
    with torch.autocast(image.device.type, enabled=amp and image.device.type == "cuda"):
        return sliding_window_inference(
            image, roi_size=tuple(patch_size), sw_batch_size=sw_batch_size,
            predictor=_collapsed(model, schema, full), overlap=overlap, mode="gaussian",
        )


class Predictor:
    """A trained run, ready to predict lesion masks for images of any geometry."""

    def __init__(self, info: runfiles.RunInfo, model: torch.nn.Module, device: torch.device,
                 tta: bool = False, overlap: float = DEFAULT_OVERLAP, amp: bool = True):
        self.info, self.model, self.device = info, model.eval(), device
        self.tta, self.overlap, self.amp = tta, overlap, amp and device.type == "cuda"
        self._transforms = inference_transforms(info.preprocessing)

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "auto", tta: bool = False,
                 overlap: float = DEFAULT_OVERLAP) -> Predictor:
        info = runfiles.load_run(run_dir)
        device_ = resolve_device(device)
        return cls(info, runfiles.build_model(info, "best", device_), device_, tta, overlap)

    @property
    def schema(self) -> LabelSchema:
        return self.info.schema

    def preprocess(self, image: sitk.Image):
        return self._transforms({"image": metatensor_from_sitk(image)})["image"]

    @torch.no_grad()
    def probabilities(self, prepared: torch.Tensor, full: bool = False) -> torch.Tensor:
        """Target (or all class) probabilities on the preprocessed grid; test-time flips when enabled."""
        x = prepared.as_tensor()[None].to(self.device) if hasattr(prepared, "as_tensor") else prepared[None].to(self.device)
        run = lambda t: sliding_window_target_probability(  # noqa: E731
            self.model, t, self.schema, self.info.preprocessing["patch_size"], self.amp, self.overlap, full)
        result = run(x)
        if self.tta:
            for axis in (2, 3, 4):
                result += run(x.flip(axis)).flip(axis)
            result /= 4
        return result[0].cpu()

    def predict(self, image: sitk.Image, probabilities: bool = False, classes: bool = False) -> Prediction:
        """Lesion mask (uint8) in ``image``'s exact geometry; optionally the probability and class map."""
        check_3d(image, "input image")
        check_finite(image, "input image")
        prepared = self.preprocess(image)
        probs = self.probabilities(prepared, full=classes)
        affine = prepared.affine
        if classes:
            target = probs[self.schema.target_value] / probs.sum(0).clamp_min(1e-12)
            class_map = probs.argmax(0).to(torch.uint8)
            # Where the collapsed rule says lesion, the class map says lesion too (and vice versa).
            class_map[target >= 0.5] = self.schema.target_value
            class_map[(target < 0.5) & (class_map == self.schema.target_value)] = 0
        else:
            target = probs[0]
        target_image = sitk_from_array(target.numpy().astype(np.float32), affine)
        on_input = sitk.Resample(target_image, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        prob_array = sitk.GetArrayFromImage(on_input)
        mask = image_from_array((prob_array >= 0.5).astype(np.uint8), image)
        result = Prediction(mask)
        if probabilities:
            result.probability = image_from_array(prob_array.astype(np.float32), image)
        if classes:
            class_image = sitk_from_array(class_map.numpy(), affine)
            result.classes = sitk.Resample(class_image, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                           sitk.sitkUInt8)
            result.classes.CopyInformation(image)
        return result

    def predict_file(self, path: str | Path, out_dir: str | Path, probabilities: bool = False,
                     classes: bool = False) -> dict[str, Path]:
        """Predict one file or DICOM folder into ``out_dir/<case>.<ext>`` (+ ``_prob`` / ``_classes``)."""
        image = read_image(path, "input image")
        result = self.predict(image, probabilities, classes)
        name, ext = case_name(path), output_extension(path)
        outputs = {"mask": write_image(result.mask, Path(out_dir) / f"{name}{ext}")}
        if result.probability is not None:
            outputs["probability"] = write_image(result.probability, Path(out_dir) / f"{name}_prob{ext}")
        if result.classes is not None:
            outputs["classes"] = write_image(result.classes, Path(out_dir) / f"{name}_classes{ext}")
        return outputs


def prediction_inputs(path: str | Path) -> list[Path]:
    """Images to predict from INPUT: one file, a DICOM series folder, or a folder of image files."""
    from BackSplitLib.errors import ImageError
    from BackSplitLib.io import image_extension

    path = Path(path)
    if not path.exists():
        raise ImageError(f"input {path} does not exist")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and image_extension(p) and not p.name.startswith("."))
    if files:
        return files
    if sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)):
        return [path]
    raise ImageError(f"input folder {path} holds no images or DICOM series",
                     "pass an image file, a folder of .nii.gz/.nrrd files, or a DICOM series folder")
