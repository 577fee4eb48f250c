"""Issue 20's two phantom families, built to differ from ct and mr: fewer classes, another geometry, smaller
or fainter targets, mimics labelled as documented."""

import numpy as np
import pytest
import SimpleITK as sitk

from BackSplitLib.dataset import Dataset
from BackSplitLib.phantom import CT_FAMILY, write_phantom_dataset
from BackSplitLib.phantom_families import FAMILIES
from BackSplitLib.phantom_liver import LIVER_FAMILY, LIVER_SCHEMA
from BackSplitLib.phantom_lung import LUNG_FAMILY, LUNG_SCHEMA

NEW = (LIVER_FAMILY, LUNG_FAMILY)


@pytest.mark.parametrize("family", NEW, ids=lambda f: f.name)
def test_same_seed_same_phantom_and_its_own_default_geometry(family):
    a, b = family.build(3), family.build(3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert a.label.shape == family.shape and a.spacing == family.spacing
    assert (family.shape, family.spacing) != (CT_FAMILY.shape, CT_FAMILY.spacing)
    assert not np.array_equal(a.image, family.build(4).image)


def test_the_liver_family_is_the_issues_example():
    assert LIVER_SCHEMA.class_names == ["background", "liver", "spleen", "kidney", "bowel", "metastasis"]
    assert LIVER_FAMILY.shape[::-1] == (80, 80, 64) and LIVER_FAMILY.spacing == (1.5, 1.5, 2.4)
    fractions = []
    for seed in range(4):
        p = LIVER_FAMILY.build(seed)
        lesion = p.label == LIVER_SCHEMA.target_value
        fractions.append(lesion.mean())
        for value in p.lesion_hu:  # faint: 15-30 HU below the enhancing liver
            assert 15 <= p.host_hu["liver"] - value <= 30
    assert 0.001 <= np.median(fractions) <= 0.008


def test_the_lung_family_has_five_classes_and_tiny_nodules_among_vessels():
    assert LUNG_SCHEMA.class_names == ["background", "lung", "airway", "vessel", "nodule"]
    p = LUNG_FAMILY.build(0)
    nodule = (p.label == LUNG_SCHEMA.target_value).astype(np.uint8)
    sizes = np.bincount(sitk.GetArrayFromImage(sitk.ConnectedComponent(sitk.GetImageFromArray(nodule))).ravel())[1:]
    assert len(sizes) == len(p.lesion_hosts) and sizes.min() >= 10 and sizes.max() < 400
    assert nodule.mean() < 0.002
    assert (p.label[p.mimics["vessel"]] == LUNG_SCHEMA.labels["vessel"]).all()


@pytest.mark.parametrize("family", NEW, ids=lambda f: f.name)
def test_mimics_carry_the_documented_labels(family):
    expected = {"bowel_contents": "bowel", "renal_medulla": "kidney", "spleen_wedge": "spleen",
                "lymph_node": "background", "vessel": "vessel", "mucus_plug": "airway", "scar": "lung"}
    seen = set()
    for seed in range(3):
        p = family.build(seed)
        for kind, mask in p.mimics.items():
            if mask.any():
                assert set(np.unique(p.label[mask])) == {family.schema.labels[expected[kind]]}, kind
                seen.add(kind)
    assert len(seen) >= 3


@pytest.mark.parametrize("family", NEW, ids=lambda f: f.name)
def test_a_dataset_of_the_family_uses_its_geometry_and_holds_its_schema(tmp_path, family):
    root = write_phantom_dataset(tmp_path / family.name, cases=1, test_cases=1, seed=0, family=family)
    data = Dataset.load(root)
    assert data.schema.class_names == family.schema.class_names and data.normalization == "CT"
    image = sitk.ReadImage(str(data.training[0].image))
    assert image.GetSize() == family.shape[::-1]
    assert image.GetSpacing() == pytest.approx(family.spacing)
    assert set(FAMILIES) >= {"liver", "lung"}
