"""The advisor's ranking: which structures hold the binary model's false positives and host the lesions."""

from __future__ import annotations

import numpy as np
import pytest

from BackSplitLib import auxiliary as aux

SHAPE = (20, 40, 40)


def _box(z, y, x) -> np.ndarray:
    mask = np.zeros(SHAPE, bool)
    mask[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = True
    return mask


@pytest.fixture
def hand_made_case() -> aux.AdvisorCase:
    """Liver hosts two lesions; bowel holds three mimics the model calls lesions; kidney and spleen are clean."""
    liver = _box((2, 18), (2, 18), (2, 18))
    bowel = _box((2, 18), (22, 38), (2, 18))
    kidney = _box((2, 18), (2, 18), (22, 38))
    spleen = _box((2, 18), (22, 38), (22, 38))
    lesions = _box((5, 8), (5, 8), (5, 8)) | _box((12, 15), (10, 13), (10, 13))
    mimics = _box((4, 6), (25, 27), (5, 7)) | _box((10, 12), (30, 32), (10, 12)) | _box((15, 17), (34, 36), (4, 6))
    free = _box((0, 1), (19, 21), (19, 21))  # a false positive in plain background, touching nothing
    for organ in (liver, bowel):
        organ &= ~(lesions | mimics)  # target wins; a mimic sits in a hole of its host
    prediction = lesions | mimics | free
    return aux.AdvisorCase(prediction, lesions, {"liver": liver, "bowel": bowel, "kidney": kidney, "spleen": spleen})


def test_the_mimic_host_and_the_lesion_host_rank_on_top(hand_made_case):
    report = aux.rank_structures([hand_made_case])
    assert report.false_positive_components == 4 and report.lesions == 2
    assert [s.name for s in report.structures[:2]] == ["liver", "bowel"]
    by_name = {s.name: s for s in report.structures}
    rim_fraction = (4 ** 3 - 2 ** 3) / 4 ** 3  # a 2-voxel mimic in a hole of the bowel: the bowel holds its rim
    assert by_name["bowel"].fp_components == 3 and by_name["bowel"].fp_share == pytest.approx(3 * rim_fraction / 4)
    assert by_name["liver"].lesions_hosted == 2 and by_name["liver"].host_share == pytest.approx(1.0)
    assert by_name["kidney"].score == 0 and by_name["spleen"].score == 0
    assert report.recommended == ["liver", "bowel"]


def test_a_prediction_touching_a_true_lesion_is_not_a_false_positive():
    truth = _box((5, 8), (5, 8), (5, 8))
    diagonal_neighbour = _box((8, 10), (8, 10), (8, 10))  # shares only a corner with the lesion
    labels, false_positives = aux.false_positive_components(truth | diagonal_neighbour, truth)
    assert labels.max() == 1 and false_positives == []
    _, false_positives = aux.false_positive_components(_box((12, 14), (12, 14), (12, 14)), truth)
    assert false_positives == [1]


def test_a_structure_that_only_borders_a_false_positive_gets_a_small_share():
    host = _box((0, 20), (0, 20), (0, 20))
    neighbour = _box((0, 20), (0, 40), (20, 40))  # borders the component on one face only
    mimic = _box((8, 12), (8, 12), (16, 20))
    host &= ~mimic
    report = aux.rank_structures([aux.AdvisorCase(mimic, np.zeros(SHAPE, bool),
                                                  {"host": host, "neighbour": neighbour})])
    by_name = {s.name: s for s in report.structures}
    assert by_name["host"].fp_components == by_name["neighbour"].fp_components == 1
    assert by_name["host"].fp_share > 3 * by_name["neighbour"].fp_share


def test_recommendations_respect_the_share_and_the_count_limits(hand_made_case):
    assert aux.rank_structures([hand_made_case], max_recommended=1).recommended == ["liver"]
    assert aux.rank_structures([hand_made_case], min_share=1.01).recommended == []


def test_the_report_serialises_for_the_slicer_module(hand_made_case):
    data = aux.rank_structures([hand_made_case]).to_dict()
    assert data["recommended"] == ["liver", "bowel"]
    assert {"name", "source", "fp_components", "fp_share", "lesions_hosted", "host_share", "score",
            "recommended"} <= set(data["structures"][0])


def test_on_phantoms_the_advisor_finds_the_mimic_hosts_and_the_lesion_hosts():
    phantom = pytest.importorskip("BackSplitLib.phantom")
    schema = phantom.PHANTOM_SCHEMA
    cases, hosts = [], set()
    for seed in range(4):
        p = phantom.build_phantom(seed, (24, 40, 48))
        truth = p.label == schema.target_value
        confused = truth | np.any(list(p.mimics.values()), axis=0)  # a binary model that takes every mimic
        cases.append(aux.AdvisorCase(confused, truth, {n: p.label == schema.labels[n] for n in schema.auxiliary_names}))
        hosts |= set(p.lesion_hosts)
    report = aux.rank_structures(cases)
    ranked = [s.name for s in report.structures]
    assert ranked[0] in hosts
    assert hosts <= set(report.recommended)
    assert {"bowel", "spleen", "fat"} <= set(report.recommended)  # fluid bowel loops, splenic and free cysts
    for clean in ("aorta", "spine", "muscle", "ivc"):
        assert clean not in report.recommended
        assert ranked.index(clean) > ranked.index("kidney_left")  # the renal sinus mimics rank kidneys higher
