"""`backsplit bench paint`'s measurement on a small volume: strokes really paint, every part is timed, and the
frames each view is asked for are counted (the numbers themselves are printed, not asserted)."""

from __future__ import annotations


def test_the_paint_bench_paints_and_times_every_part():
    from BackSplitWeb.paint_bench import PaintBenchSettings, paint_rows, run_paint_bench

    results = run_paint_bench(PaintBenchSettings(shape=(16, 64, 64), spacing=(1.0, 1.0, 3.0), strokes=3,
                                                 view_size=(200, 200)),
                              log=lambda _: None)
    assert results["painted_voxels"] > 0 and results["slice_views"] == 3
    for part in ("edit", "painted_view_frame", "all_view_frames", "shown", "all_views"):
        assert 0 < results[part]["median_s"] <= results[part]["p95_s"] <= results[part]["max_s"]
    assert results["shown"]["median_s"] <= results["all_views"]["median_s"]
    asked = results["frame_requests_per_stroke"]
    assert asked["painted_view"] > 0 and asked["other_views"] > 0  # the brush shows in every slice view
    assert len(paint_rows(results)) == 5
