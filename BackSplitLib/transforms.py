"""MONAI dictionary transforms for BackSplit, and the SimpleITK <-> MONAI bridge.

MONAI has no SimpleITK reader (``ITKReader`` needs the separate ``itk`` package), so
:class:`SimpleITKReader` reads with SimpleITK and hands MONAI an array plus an RAS affine exactly as
MONAI's own readers do; every MONAI transform then works unchanged (orientation, spacing, crops, ...).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor
from monai.data.utils import orientation_ras_lps
from monai.transforms import (
    ClassesToIndicesd,
    Compose,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAffined,
    RandCropByLabelClassesd,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ResampleToMatchd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from BackSplitLib.io import image_extension, read_image

ORIENTATION = "RAS"
RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


# ------------------------------------------------------------------ SimpleITK bridge
def affine_of(image: sitk.Image) -> np.ndarray:
    """4x4 RAS affine of a SimpleITK image (index (x, y, z) -> RAS mm), as MONAI's readers build it."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return orientation_ras_lps(affine)


def metatensor_from_sitk(image: sitk.Image, dtype=np.float32) -> MetaTensor:
    """(1, X, Y, Z) MetaTensor with the image's RAS affine."""
    array = sitk.GetArrayFromImage(image).astype(dtype, copy=False).transpose(2, 1, 0)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.as_tensor(affine_of(image)))


def sitk_from_array(array: np.ndarray, affine: np.ndarray | torch.Tensor) -> sitk.Image:
    """SimpleITK image from an (X, Y, Z) array and its RAS affine (the inverse of the reader)."""
    affine = orientation_ras_lps(np.asarray(affine, dtype=np.float64))
    linear = affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((linear / spacing).flatten().tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    return image


class SimpleITKReader(ImageReader):
    """MONAI ``ImageReader`` backed by SimpleITK: NIfTI, NRRD, MetaImage and DICOM series folders."""

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return all(Path(n).is_dir() or bool(image_extension(n)) for n in names)

    def read(self, data, **kwargs):
        # LoadImage passes a tuple of names (one per channel); BackSplit images have one channel.
        items = [data] if isinstance(data, (str, Path, sitk.Image)) else list(data)
        images = [d if isinstance(d, sitk.Image) else read_image(d, what=kwargs.get("what", "image")) for d in items]
        return images[0] if len(images) == 1 else images

    def get_data(self, img: sitk.Image) -> tuple[np.ndarray, dict]:
        array = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
        affine = affine_of(img)
        meta = {
            "affine": affine,
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(img.GetSize()),
            "original_channel_dim": float("nan"),
            "space": "RAS",
        }
        return array, meta


# ------------------------------------------------------------------ BackSplit-specific transforms
class RemapLabelsd(MapTransform):
    """Map label values written with one schema to another's by a lookup table (classes matched by name)."""

    def __init__(self, keys: KeysCollection, lookup: np.ndarray | None):
        super().__init__(keys)
        self.lookup = None if lookup is None else torch.as_tensor(np.asarray(lookup), dtype=torch.long)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if self.lookup is None:
            return d
        for key in self.key_iterator(d):
            label = d[key]
            plain = label.as_tensor() if isinstance(label, MetaTensor) else torch.as_tensor(label)
            values = plain.round().long().clamp(0, len(self.lookup) - 1)
            mapped = self.lookup.to(values.device)[values].to(torch.float32)
            d[key] = MetaTensor(mapped, meta=label.meta) if isinstance(label, MetaTensor) else mapped
        return d


class TargetMaskd(MapTransform):
    """Add ``<key>_target``: 1 where the label is the target class, so crops balance lesion vs rest
    identically in binary and BackSplit mode (the comparison must not change the sampling)."""

    def __init__(self, keys: KeysCollection, target_value: int):
        super().__init__(keys)
        self.target_value = target_value

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}_target"] = (torch.as_tensor(d[key]) == self.target_value).to(torch.uint8)
        return d


# ------------------------------------------------------------------ chains
def intensity_transforms(keys: str, normalization: Mapping) -> list:
    """CT: clip to the dataset's foreground percentiles, z-score with its foreground mean/std (nnU-Net);
    anything else: per-image z-score."""
    if normalization["scheme"] == "CT":
        lo, hi = normalization["clip"]
        return [
            ScaleIntensityRanged(keys, a_min=lo, a_max=hi, b_min=lo, b_max=hi, clip=True),
            NormalizeIntensityd(keys, subtrahend=normalization["mean"], divisor=normalization["std"]),
        ]
    return [NormalizeIntensityd(keys, channel_wise=True)]


def deterministic_transforms(preprocessing: Mapping, with_label: bool, lookup: np.ndarray | None = None,
                             target_value: int | None = None, resample_labels: bool = False) -> list:
    """Load, orient to RAS, resample to the run's spacing, normalise; labels remapped to the training
    schema and lesion indices precomputed for the crop sampler (so cached, not recomputed each step)."""
    keys = ["image", "label"] if with_label else ["image"]
    modes = ["bilinear", "nearest"] if with_label else ["bilinear"]
    chain = [
        LoadImaged(keys, reader=SimpleITKReader(), image_only=True),
        EnsureChannelFirstd(keys, channel_dim="no_channel"),
        # --resample-labels: a label on another grid is brought onto its image's grid in physical space.
        *([ResampleToMatchd("label", key_dst="image", mode="nearest", padding_mode="zeros")]
          if with_label and resample_labels else []),
        Orientationd(keys, axcodes=ORIENTATION, labels=RAS_LABELS),
        Spacingd(keys, pixdim=preprocessing["spacing"], mode=modes),
        *intensity_transforms("image", preprocessing["normalization"]),
    ]
    if with_label:
        chain += [RemapLabelsd("label", lookup)]
        if target_value is not None:
            chain += [
                TargetMaskd("label", target_value),
                ClassesToIndicesd("label_target", num_classes=2, indices_postfix="_indices"),
                DeleteItemsd("label_target"),
            ]
    chain += [EnsureTyped(keys, dtype=torch.float32, track_meta=False)]
    return chain


def random_transforms(patch_size: Sequence[int], lesion_fraction: float, augment: bool = True) -> list:
    """Crop a patch (``lesion_fraction`` of crops centred on a lesion voxel), then flips, small
    rotations / scaling and intensity augmentation."""
    keys = ["image", "label"]
    chain = [
        SpatialPadd(keys, spatial_size=patch_size, mode="constant"),
        RandCropByLabelClassesd(
            keys, label_key="label", spatial_size=patch_size, ratios=[1 - lesion_fraction, lesion_fraction],
            num_classes=2, num_samples=1, indices_key="label_target_indices", warn=False,
        ),
    ]
    if augment:
        chain += [
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys, prob=0.5, spatial_axis=2),
            RandAffined(keys, prob=0.2, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.15, 0.15, 0.15),
                        mode=("bilinear", "nearest"), padding_mode="border"),
            RandScaleIntensityd("image", factors=0.1, prob=0.15),
            RandShiftIntensityd("image", offsets=0.1, prob=0.15),
            RandGaussianNoised("image", prob=0.15, std=0.05),
        ]
    return chain


def training_transforms(preprocessing: Mapping, lookup: np.ndarray | None, target_value: int,
                        lesion_fraction: float = 0.5, augment: bool = True, resample_labels: bool = False) -> Compose:
    return Compose(
        deterministic_transforms(preprocessing, True, lookup, target_value, resample_labels)
        + random_transforms(preprocessing["patch_size"], lesion_fraction, augment)
    )


def validation_transforms(preprocessing: Mapping, lookup: np.ndarray | None, resample_labels: bool = False) -> Compose:
    return Compose(deterministic_transforms(preprocessing, True, lookup, resample_labels=resample_labels))


def inference_transforms(preprocessing: Mapping) -> Compose:
    """Orientation, spacing and normalisation for an in-memory image (keeps the affine for inversion)."""
    return Compose([
        Orientationd("image", axcodes=ORIENTATION, labels=RAS_LABELS),
        Spacingd("image", pixdim=preprocessing["spacing"], mode="bilinear"),
        *intensity_transforms("image", preprocessing["normalization"]),
    ])
