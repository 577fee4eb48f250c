"""Benchmark: *Add case* on an organ map with many segments, before and after the one-pass export.

    PYTHONPATH=. python Testing/slicer_module/bench_add_case.py [--shape 300 512 512] [--segments 100]

Builds a volume of ``--shape`` (slice, row, column) voxels and a segmentation imported from a label map with
``--segments`` organs (one shared labelmap layer, as a TotalSegmentator result is) plus a lesion, on real MRML
(slicer-core), then times ``export_case`` (after: one resampling per layer) and the per-segment export it
replaced (before: one full-size labelmap node per segment, kept below as the reference). "Before" holds one
full-size mask per segment, so ``--before-segments`` can time it on fewer segments and scale linearly. A
printed number, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1] / "BackSplit")]

import slicer  # noqa: E402
import slicer_scenes as scenes  # noqa: E402
from mrml_bootstrap import bootstrap  # noqa: E402

from BackSplitSlicer.case import _case_schema, export_case, export_segment_mask  # noqa: E402
from BackSplitSlicer.roles import AUXILIARY, TARGET, segment_ids, segment_role  # noqa: E402


def per_segment_export(volume, segmentation, limit: int):
    """The export before the one-pass change: every segment exported on its own, masks merged by the schema."""
    shape = tuple(reversed(volume.GetImageData().GetDimensions()))
    target, auxiliary = np.zeros(shape, bool), {}
    ids = [i for i in segment_ids(segmentation)
           if segment_role(segmentation.GetSegmentation().GetSegment(i)) in (TARGET, AUXILIARY)][:limit]
    for segment_id in ids:
        segment = segmentation.GetSegmentation().GetSegment(segment_id)
        mask = export_segment_mask(segmentation, segment_id, volume)
        if segment_role(segment) == TARGET:
            target |= mask
        else:
            auxiliary[segment.GetName()] = auxiliary.get(segment.GetName(), np.zeros(shape, bool)) | mask
    schema = _case_schema("lesion", list(auxiliary), False, {}, None)
    return schema.merge(target, auxiliary, None, shape=shape), len(ids)


def organ_scene(scene, shape: tuple[int, int, int], segments: int):
    rng = np.random.default_rng(0)
    image = rng.normal(40, 20, shape).astype(np.float32)
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    volume.SetSpacing(0.8, 0.8, 1.5)
    slicer.util.updateVolumeFromArray(volume, image)
    labels = np.zeros(shape, np.uint8)
    side = int(np.ceil(np.sqrt(segments)))  # organs as a grid of boxes in the central slices
    rows, cols = shape[1] // side, shape[2] // side
    for value in range(1, segments + 1):
        r, c = divmod(value - 1, side)
        labels[shape[0] // 4: 3 * shape[0] // 4, r * rows:(r + 1) * rows - 2, c * cols:(c + 1) * cols - 2] = value
    names = {value: f"organ_{value:03d}" for value in range(1, segments + 1)}
    names[1] = "lesion"  # the target (default role from the name)
    return volume, scenes.add_label_map_segmentation(scene, volume, labels, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512), help="slice row column")
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--before-segments", type=int, default=None,
                        help="time the per-segment export on this many segments and scale (default: all)")
    args = parser.parse_args()
    scene = bootstrap()["scene"]
    volume, segmentation = organ_scene(scene, tuple(args.shape), args.segments)
    print(f"volume {tuple(args.shape)} (slice, row, column), {args.segments} segments")

    start = time.perf_counter()
    case = export_case(volume, segmentation)
    after = time.perf_counter() - start
    print(f"after  (one pass per labelmap layer): {after:.2f} s, {case.schema.num_classes} classes")

    start = time.perf_counter()
    label, timed = per_segment_export(volume, segmentation, args.before_segments or args.segments)
    before = (time.perf_counter() - start) * args.segments / timed
    scaled = "" if timed == args.segments else f" (measured on {timed} segments, scaled to {args.segments})"
    print(f"before (one labelmap per segment):   {before:.2f} s{scaled}")
    if timed == args.segments:
        assert np.array_equal(label, case.label), "the two exports differ"
        print("both exports give the same label map")
    print(f"speed-up: {before / after:.1f}x")


if __name__ == "__main__":
    main()
