"""The training controls both faces bind, without Qt: the case mode's choices, the case picker's ticks, and
the training curve as Slicer's plot nodes (real MRML)."""

from __future__ import annotations

from BackSplitSlicer.panel_state import CASE_MODES, PanelState, case_choices, case_mode_index, chosen_cases


def test_each_case_mode_has_one_choice_and_its_position():
    assert [value for _, value, _ in CASE_MODES] == [None, True, False]
    assert [case_mode_index(v) for v in (None, True, False)] == [0, 1, 2]


def test_every_case_is_ticked_until_some_are_chosen():
    cases = (("a", "case A"), ("b", "case B"), ("c", "case C"))
    assert case_choices(PanelState(cases=cases)) == [("a", "case A", True), ("b", "case B", True),
                                                     ("c", "case C", True)]
    assert [row[2] for row in case_choices(PanelState(cases=cases, case_ids=("b",)))] == [False, True, False]


def test_ticks_become_the_cases_fine_tune_trains_on():
    assert chosen_cases(["a", "b", "c"], {"c", "a"}) == ["a", "c"]  # the server's order
    assert chosen_cases(["a", "b"], {"a", "b"}) is None  # all ticked: every case, also ones added later
    assert chosen_cases(["a", "b"], set()) == []


def test_the_training_curve_is_drawn_from_the_polled_iterations(scene):
    from BackSplitSlicer.training_curve import TrainingCurve

    curve = TrainingCurve(scene)
    curve.update([(1, 0.9, None), (2, 0.8, 0.1), (3, 0.7, None), (4, 0.6, 0.3)])
    loss, dice = curve.points()
    assert loss == [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)] and dice == [(2, 0.1), (4, 0.3)]
    assert curve.view_node.GetPlotChartNodeID() == curve.chart.GetID()
    assert curve.chart.GetNumberOfPlotSeriesNodes() == 2
    curve.update([(1, 1.1, None)])  # a new job starts its own curve
    assert curve.points() == [[(1, 1.1)], []]
    assert not curve.chart.GetSaveWithScene()
    curve.remove()
    assert curve.chart.GetScene() is None
