"""The advisor: which auxiliary classes are worth labelling, judged by where a binary model's false
positives and the true lesions sit. ``rank_structures`` is pure (arrays in, report out); ``advise`` runs
the model and imports the predictor (torch) only when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.auxiliary.ct_tissues import ct_tissue_classes
from BackSplitLib.auxiliary.dataset_mode import read_training_case
from BackSplitLib.errors import LabelError, RunError


@dataclass(frozen=True)
class StructureScore:
    """How much one candidate structure matters to the binary model's errors and to the lesions.

    ``fp_components`` / ``lesions_hosted`` count the false-positive components and true lesions that lie
    in or touch the structure; ``fp_share`` / ``host_share`` weight each of them by the fraction of its
    voxels and rim (a lesion: its rim) that the structure holds, so a structure that merely borders everything
    (fat, the body wall) does not outrank the one the component actually sits in.
    """

    name: str
    source: str
    fp_components: int
    fp_share: float
    lesions_hosted: int
    host_share: float
    cases: int
    score: float
    recommended: bool = False

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class AdvisorReport:
    structures: list[StructureScore]
    recommended: list[str]
    cases: int
    false_positive_components: int
    lesions: int

    def to_dict(self) -> dict:
        return {"cases": self.cases, "false_positive_components": self.false_positive_components,
                "lesions": self.lesions, "recommended": list(self.recommended),
                "structures": [s.to_dict() for s in self.structures]}


@dataclass
class AdvisorCase:
    """One case for the advisor: binary prediction, true lesion mask, candidate structure masks
    (boolean (z, y, x) arrays of one shape) and where each candidate came from."""

    prediction: np.ndarray
    truth: np.ndarray
    structures: Mapping[str, np.ndarray]
    sources: Mapping[str, str] = field(default_factory=dict)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a boolean array: (labels, count)."""
    image = sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8))
    labels = sitk.ConnectedComponent(image, True)
    array = sitk.GetArrayFromImage(labels)
    return array, int(array.max())


def _dilate(mask: np.ndarray, voxels: int) -> np.ndarray:
    if voxels <= 0:
        return np.asarray(mask, dtype=bool)
    image = sitk.GetImageFromArray(np.asarray(mask, dtype=np.uint8))
    return sitk.GetArrayFromImage(sitk.BinaryDilate(image, [voxels] * 3, sitk.sitkBox)).astype(bool)


def _with_rim(labels: np.ndarray, voxels: int) -> np.ndarray:
    """Component labels grown by a ``voxels``-wide rim (26-neighbourhood) into unlabelled voxels."""
    if voxels <= 0:
        return labels
    grown = sitk.GetArrayFromImage(sitk.GrayscaleDilate(sitk.GetImageFromArray(labels.astype(np.uint32)),
                                                        [voxels] * 3, sitk.sitkBox))
    return np.where(labels > 0, labels, grown)


def false_positive_components(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Component labels of ``prediction`` and the ids of those that neither overlap nor touch (26-neighbour)
    a true lesion: the binary model's false positives."""
    labels, count = _components(prediction)
    touching = set(np.unique(labels[_dilate(truth, 1)]).tolist()) - {0}
    return labels, [i for i in range(1, count + 1) if i not in touching]


def _contact(regions: np.ndarray, count: int, masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per structure: the fraction of each component's voxels-plus-rim that the structure holds."""
    inside = regions > 0
    ids = regions[inside]
    totals = np.maximum(np.bincount(ids, minlength=count + 1), 1)
    return {name: np.bincount(ids[mask[inside]], minlength=count + 1) / totals for name, mask in masks.items()}


def rank_structures(cases: Iterable[AdvisorCase], margin_voxels: int = 1, min_share: float = 0.1,
                    max_recommended: int = 5) -> AdvisorReport:
    """Rank candidate structures by (a) the model's false-positive components that lie in or touch them
    and (b) the true lesions that sit in or next to them (their host).

    "Touch" / "next to" means within ``margin_voxels`` (26-neighbourhood). Each component is shared
    among the structures by the fraction of its voxels and rim they hold; score = (a) share + (b) share.
    A structure is recommended when either share reaches ``min_share``; at most ``max_recommended``,
    best first. Pure: arrays in, report out (no model, no files), so it is testable on hand-made masks.
    """
    fp_count: dict[str, int] = {}
    fp_weight: dict[str, float] = {}
    host_count: dict[str, int] = {}
    host_weight: dict[str, float] = {}
    present: dict[str, int] = {}
    sources: dict[str, str] = {}
    total_fp = total_lesions = n_cases = 0
    for case in cases:
        n_cases += 1
        prediction = np.asarray(case.prediction, dtype=bool)
        truth = np.asarray(case.truth, dtype=bool)
        fp_labels, fp_ids = false_positive_components(prediction, truth)
        keep = np.zeros(int(fp_labels.max()) + 1, dtype=np.int64)
        keep[fp_ids] = np.arange(1, len(fp_ids) + 1)  # renumber false positives 1..n
        fp_regions = _with_rim(keep[fp_labels], margin_voxels)
        lesion_labels, n_lesions = _components(truth)
        # lesion voxels are never structure voxels (the target wins), so a lesion's host is judged by its rim
        lesion_regions = np.where(lesion_labels > 0, 0, _with_rim(lesion_labels, margin_voxels))
        total_fp += len(fp_ids)
        total_lesions += n_lesions
        masks = {}
        for name, mask in case.structures.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != prediction.shape:
                raise LabelError(f"structure '{name}' has shape {mask.shape}, the prediction {prediction.shape}")
            sources.setdefault(name, case.sources.get(name, "dataset"))
            for table in (fp_count, host_count):
                table.setdefault(name, 0)
            for table in (fp_weight, host_weight):
                table.setdefault(name, 0.0)
            if mask.any():
                present[name] = present.get(name, 0) + 1
                masks[name] = mask
        for name, fraction in _contact(fp_regions, len(fp_ids), masks).items():
            fp_count[name] += int(np.count_nonzero(fraction[1:]))
            fp_weight[name] += float(fraction[1:].sum())
        for name, fraction in _contact(lesion_regions, n_lesions, masks).items():
            host_count[name] += int(np.count_nonzero(fraction[1:]))
            host_weight[name] += float(fraction[1:].sum())
    scores = []
    for name in fp_count:
        fp_share = fp_weight[name] / total_fp if total_fp else 0.0
        host_share = host_weight[name] / total_lesions if total_lesions else 0.0
        scores.append(StructureScore(name, sources[name], fp_count[name], fp_share, host_count[name], host_share,
                                     present.get(name, 0), fp_share + host_share))
    scores.sort(key=lambda s: (-s.score, -s.fp_components, -s.lesions_hosted, s.name))
    recommended = [s.name for s in scores if s.score > 0 and max(s.fp_share, s.host_share) >= min_share]
    recommended = recommended[:max_recommended]
    ranked = [StructureScore(**{**s.__dict__, "recommended": s.name in recommended}) for s in scores]
    return AdvisorReport(ranked, recommended, n_cases, total_fp, total_lesions)


def advise(run_dir: str | Path, dataset_root: str | Path, tissues: bool | None = None, device: str = "auto",
           min_share: float = 0.1, max_recommended: int = 5,
           progress: Callable[[int, int, str], None] | None = None) -> AdvisorReport:
    """Predict every training case with the binary model in ``run_dir`` and rank the dataset's auxiliary
    classes (where a case labels them) and, for CT datasets or ``tissues=True``, the CT tissue classes."""
    from BackSplitLib.dataset import Dataset
    from BackSplitLib.inference import Predictor  # torch: imported only here

    dataset = Dataset.load(dataset_root)
    if tissues is None:
        tissues = dataset.normalization == "CT"
    predictor = Predictor.from_run(run_dir, device=device)
    schema = dataset.schema

    def cases():
        for i, case in enumerate(dataset.training):
            if progress:
                progress(i, len(dataset.training), case.name)
            image, label = read_training_case(case)
            label_array = sitk.GetArrayFromImage(label)
            mask = predictor.predict(image, probabilities=False, classes=False).mask
            prediction = sitk.GetArrayFromImage(mask) if isinstance(mask, sitk.Image) else np.asarray(mask)
            if prediction.shape != label_array.shape:
                raise RunError(f"the prediction of {case.image} has shape {prediction.shape}, its label "
                               f"{label_array.shape}", "the predictor must return masks on the input grid")
            structures = {n: label_array == schema.labels[n] for n in schema.auxiliary_names if n in case.labelled}
            source = {n: "dataset" for n in structures}
            truth = label_array == schema.target_value
            if tissues:
                # as when added to the dataset: labelled structures and the target win over tissue classes
                taken = np.logical_or.reduce([truth, *structures.values()])
                aux = ct_tissue_classes(image)
                aux_array = aux.array()
                for name, value in aux.classes.items():
                    if name not in structures:
                        structures[name], source[name] = (aux_array == value) & ~taken, "tissue"
            yield AdvisorCase(prediction, truth, structures, source)
        if progress:
            progress(len(dataset.training), len(dataset.training), "")

    return rank_structures(cases(), min_share=min_share, max_recommended=max_recommended)
