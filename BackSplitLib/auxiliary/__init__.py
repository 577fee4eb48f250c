"""Auxiliary labels without drawing, one module per subject:

- ``labels``: :class:`AuxiliaryLabels`, what every generator returns (a label map on the image's grid whose
  values 1..K are the classes in order, so ``LabelSchema.from_names(target, classes)`` describes it);
- ``masks``: CT and MR body masks;
- ``ct_tissues``: CT tissue classes from Hounsfield units;
- ``mr_classes``: MR intensity classes;
- ``structures``: resolving a request ("abdominal organs", ``vertebrae_*``, ``new=a+b``) into classes;
- ``organ_maps``: label maps with named structures and the formats that name them;
- ``totalsegmentator``: the bridge to an installed TotalSegmentator;
- ``degraded``: ground-truth organ labels degraded the way an organ segmenter errs (seeded);
- ``dataset_mode``: adding classes to every case of a dataset folder;
- ``advisor``: which classes are worth it, judged by a binary model's errors.

Torch-free on purpose, and importable on Python 3.9: the Slicer module imports this package inside a
Slicer that may have no PyTorch (only ``advisor.advise`` imports the predictor, when called). Image work
goes through SimpleITK filters and vectorised numpy, never voxel loops. The public names of every module are
re-exported here, so ``from BackSplitLib.auxiliary import ct_tissue_classes`` keeps working.
"""

from BackSplitLib.auxiliary.advisor import (AdvisorCase, AdvisorReport, StructureScore, advise,
                                            false_positive_components, rank_structures)
from BackSplitLib.auxiliary.ct_tissues import (TISSUE_CLASSES, TISSUE_COLORS, TissueRanges, check_ct_units,
                                               ct_tissue_classes, parse_hu_ranges)
from BackSplitLib.auxiliary.degraded import SegmenterErrors, degrade_organs
from BackSplitLib.auxiliary.dataset_mode import DatasetUpdate, add_classes_to_dataset, read_training_case
from BackSplitLib.auxiliary.labels import AuxiliaryError, AuxiliaryLabels, Color, label_from_masks
from BackSplitLib.auxiliary.masks import ct_body_mask, fill_holes_slicewise, largest_component, mr_body_mask
from BackSplitLib.auxiliary.mr_classes import MR_METHODS, kmeans_thresholds, mr_intensity_classes, otsu_thresholds
from BackSplitLib.auxiliary.organ_maps import (OrganMap, Segment, detect_names, import_organ_map, nifti_label_table,
                                               read_names_file, read_organ_map, seg_nrrd_segments,
                                               totalsegmentator_class_map)
from BackSplitLib.auxiliary.structures import STRUCTURE_GROUPS, StructureGroup, select_structures
from BackSplitLib.auxiliary.totalsegmentator import (TOTALSEG_INSTALL_HINT, TOTALSEG_WEIGHTS, run_totalsegmentator,
                                                     totalsegmentator_missing_weights, totalsegmentator_package_dir,
                                                     totalsegmentator_status, totalsegmentator_weights_dir)

__all__ = [
    "AdvisorCase", "AdvisorReport", "AuxiliaryError", "AuxiliaryLabels", "Color", "DatasetUpdate", "MR_METHODS",
    "OrganMap", "STRUCTURE_GROUPS", "Segment", "SegmenterErrors", "StructureGroup", "StructureScore", "TISSUE_CLASSES",
    "TISSUE_COLORS", "TOTALSEG_INSTALL_HINT", "TOTALSEG_WEIGHTS", "TissueRanges", "add_classes_to_dataset",
    "advise", "check_ct_units", "ct_body_mask", "ct_tissue_classes", "degrade_organs", "detect_names", "false_positive_components",
    "fill_holes_slicewise", "import_organ_map", "kmeans_thresholds", "label_from_masks", "largest_component",
    "mr_body_mask", "mr_intensity_classes", "nifti_label_table", "otsu_thresholds", "parse_hu_ranges",
    "rank_structures", "read_names_file", "read_organ_map", "read_training_case", "run_totalsegmentator",
    "select_structures", "seg_nrrd_segments", "totalsegmentator_class_map", "totalsegmentator_missing_weights",
    "totalsegmentator_package_dir", "totalsegmentator_status", "totalsegmentator_weights_dir",
]
