"""How long one paint stroke takes in the browser app, end to end on the app's side (``backsplit bench paint``).

One :class:`~BackSplitWeb.app.WebApp` in this process, a CT-sized volume, a segment, trame-slicer's Paint
effect (one slice, as the page starts it). Per stroke, the parts the app's event loop runs before the browser
can show it:

- **edit**: the mouse events of a stroke (press, moves, release) through the slice view's interactor, as
  trame's remote-controlled area delivers them, until the segment is painted; every observer runs here (the
  segment editor's page state, the BackSplit panel's roles and colours, the unsaved-work flag);
- **frame**: what trame-rca's image scheduler then does for each slice view: render, read back, JPEG-encode
  at the interactive quality (the browser receives the painted view's frame; the other views render too);
- **shown** = edit + the painted view's frame: when the stroke appears where the user paints (the goal);
- **all views** = edit + the frames of every slice view: when the other views show it too;
- **frame requests**: how many frames each view is asked for during a stroke (the brush shows in every
  slice view, so the views the pointer is not over are asked too; the app renders those at
  ``app.UNFOCUSED_VIEW_FPS``).

The browser's own decode and the network are not measured (loopback, a few ms). Medians and 95th percentiles
over ``strokes`` strokes, after one warm-up stroke. ``profile_to`` writes a cProfile of the strokes.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The chest CT: 512 x 512 x 61 voxels of 0.63 x 0.63 x 5 mm.
DEFAULT_SHAPE = (61, 512, 512)  # z, y, x
DEFAULT_SPACING = (0.63, 0.63, 5.0)  # x, y, z mm
VIEW_SIZE = (700, 700)  # pixels of each slice view, about what a laptop browser shows
INTERACTIVE_QUALITY = 50  # trame-slicer's default interactive JPEG quality
MOVES_PER_STROKE = 10
GOAL_S = 1.0  # issue 21: a paint stroke under 1 s on an idle machine


@dataclass
class PaintBenchSettings:
    shape: tuple = DEFAULT_SHAPE
    spacing: tuple = DEFAULT_SPACING
    strokes: int = 20
    profile_to: Path | None = None
    view_size: tuple = VIEW_SIZE


def _ct_like(shape, spacing):
    """A CT-like int16 volume: air, a body ellipse of soft tissue and fat, noise."""
    import SimpleITK as sitk

    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    body = ((y - shape[1] / 2) / (0.42 * shape[1])) ** 2 + ((x - shape[2] / 2) / (0.46 * shape[2])) ** 2 < 1
    voxels = np.where(body, 40, -1000).astype(np.int16) + np.zeros((shape[0], 1, 1), np.int16)
    rng = np.random.default_rng(0)
    voxels += rng.normal(0, 15, shape).astype(np.int16)
    image = sitk.GetImageFromArray(voxels)
    image.SetSpacing(tuple(float(s) for s in spacing))
    return image


def _count_render_requests(views) -> dict:
    """Count the frames each view's render strategy is asked for (trame-slicer's ``_scheduled_render``)."""
    counts: dict = {}
    for view in views:
        strategy = view._scheduled_render
        ask = strategy.schedule_render

        def counted(*args, _ask=ask, _name=view.name, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _ask(*args, **kwargs)

        strategy.schedule_render = counted
    return counts


def _summary(values: list[float]) -> dict:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"median_s": statistics.median(ordered), "p95_s": p95, "max_s": ordered[-1]}


def run_paint_bench(settings: PaintBenchSettings, log: Callable[[str], None] = print) -> dict:
    """Time ``settings.strokes`` paint strokes (see the module docstring); returns the numbers."""
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import vtk
    from trame_rca.encoders import RcaImageEncoder
    from trame_slicer.segmentation import SegmentationEffectPaint

    from BackSplitWeb.app import WebApp, WebSettings
    from BackSplitWeb.module_path import ensure_slicer_module_on_path

    ensure_slicer_module_on_path()
    from trame_slicer.rca_view.rca_view_factory import RcaWindow

    started = time.monotonic()
    app = WebApp(WebSettings(port=0, work_dir=Path(tempfile.mkdtemp(prefix="backsplit-paint-bench-"))))
    log(f"opening a {settings.shape[2]}x{settings.shape[1]}x{settings.shape[0]} CT-like volume")
    app.open_volume(_ct_like(settings.shape, settings.spacing), "bench.nii.gz")
    editor = app.slicer_app.segmentation_editor
    if app.segmentation_node() is None:
        editor.set_active_segmentation(editor.create_empty_segmentation_node(), app.volume_node)
        app.panel.on_volume_changed(app.volume_node)
    editor.add_empty_segment(segment_name="lesion")
    editor.set_active_effect_type(SegmentationEffectPaint)

    views = app.slicer_app.view_manager.get_slice_views()
    windows = {view.name: RcaWindow(view.render_window(), app.state, f"bench_{view.name}_cursor") for view in views}
    for window in windows.values():
        window.process_resize_event(*settings.view_size)
    axial = next(v for v in views if v.get_view_node().GetOrientation() == "Axial")
    encoder = RcaImageEncoder.TURBO_JPEG
    requests = _count_render_requests(views)
    low, high = axial.get_slice_range()

    def event(name: str, x: int, y: int) -> None:
        interactor = axial.interactor()
        interactor.SetEventInformation(x, y, 0, 0, "\0", 0)
        interactor.InvokeEvent(getattr(vtk.vtkCommand, name))

    def stroke(i: int) -> dict:
        axial.set_slice_value(low + (high - low) * ((i * 7) % 20 + 0.5) / 20)  # a different slice each time
        w, h = settings.view_size
        x0, y0 = int(w * (0.35 + 0.01 * (i % 10))), int(h * 0.45)
        t0 = time.perf_counter()
        event("LeftButtonPressEvent", x0, y0)
        for k in range(1, MOVES_PER_STROKE + 1):
            event("MouseMoveEvent", x0 + 6 * k, y0 + 3 * k)
        event("LeftButtonReleaseEvent", x0 + 6 * MOVES_PER_STROKE, y0 + 3 * MOVES_PER_STROKE)
        edit = time.perf_counter() - t0
        asked = dict(requests)
        requests.clear()
        frames = {}
        for name, window in windows.items():
            t1 = time.perf_counter()
            image, cols, rows = window.img_cols_rows
            encoder.encode(image, cols, rows, INTERACTIVE_QUALITY)
            frames[name] = time.perf_counter() - t1
        return {"edit": edit, "painted_frame": frames[axial.name], "frames": sum(frames.values()),
                "asked_painted": asked.get(axial.name, 0),
                "asked_others": sum(n for name, n in asked.items() if name != axial.name)}

    stroke(-1)  # warm-up: first render, first paint allocates the labelmap
    profiler = None
    if settings.profile_to is not None:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    samples = [stroke(i) for i in range(settings.strokes)]
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(str(settings.profile_to))
    painted = next(s["voxels"] for s in app.panel.describe()["segments"] if s["name"] == "lesion")
    if not painted:
        raise RuntimeError("the strokes painted nothing: the benchmark did not measure painting")
    results = {
        "shape_zyx": list(settings.shape), "spacing_xyz": list(settings.spacing), "strokes": settings.strokes,
        "moves_per_stroke": MOVES_PER_STROKE, "view_size": list(settings.view_size), "slice_views": len(windows),
        "painted_voxels": painted, "goal_s": GOAL_S,
        "edit": _summary([s["edit"] for s in samples]),
        "painted_view_frame": _summary([s["painted_frame"] for s in samples]),
        "all_view_frames": _summary([s["frames"] for s in samples]),
        "shown": _summary([s["edit"] + s["painted_frame"] for s in samples]),
        "all_views": _summary([s["edit"] + s["frames"] for s in samples]),
        # Frames asked for during one stroke (the scheduler coalesces them, at most one per view per period).
        "frame_requests_per_stroke": {"painted_view": statistics.median(s["asked_painted"] for s in samples),
                                      "other_views": statistics.median(s["asked_others"] for s in samples)},
        "load_average": list(os.getloadavg()), "cpus": os.cpu_count(), "wall_s": time.monotonic() - started,
    }
    return results


def paint_rows(results: dict) -> list[tuple[str, str, str]]:
    """(part, median, 95th percentile) rows for the CLI's table."""
    rows = []
    for key, label in (("edit", "edit: events -> segment painted"), ("painted_view_frame", "frame of the painted view"),
                       ("all_view_frames", "frames of all slice views"),
                       ("shown", "shown: edit + painted view's frame"), ("all_views", "all views: edit + all frames")):
        rows.append((label, f"{results[key]['median_s'] * 1000:.0f} ms", f"{results[key]['p95_s'] * 1000:.0f} ms"))
    return rows
