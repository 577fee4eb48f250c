"""The third phantom family (issue 20): portal-venous CT of the upper abdomen with faint liver metastases.

Built to differ on purpose from the two families the recipe was tuned on (:mod:`BackSplitLib.phantom`,
:mod:`BackSplitLib.phantom_mr`), as a user's first dataset would:

- **few classes**: six (background, liver, spleen, kidney, bowel, metastasis): both kidneys are one class,
  fat, muscle, bone and vessels are background, so K = 6 where the CT family has 13;
- **another geometry**: 80 x 80 x 64 voxels (x, y, z) at 1.5 x 1.5 x 2.4 mm by default;
- **faint targets**: hypodense metastases only 15-30 HU below an enhancing liver (~105 HU), in image noise
  of 8-14 HU (the CT family's cysts are 30-50 HU below the liver); the lesions together fill about
  0.1-0.8 % of the volume; hosts liver (most), spleen and kidney;
- **mimics** with the metastases' intensity, each labelled as an automatic organ map (TotalSegmentator v2
  ``total``, merged to these classes) would label it:

  - bowel contents of soft-tissue density: ``bowel`` (``total``'s small_bowel / colon / duodenum);
  - the renal medulla in the corticomedullary phase (5-15 HU darker still): ``kidney`` (``total``'s kidney masks are whole organs);
  - a wedge-shaped hypodense area of the spleen (infarct-like): ``spleen``;
  - lymph nodes in the mesenteric and retroperitoneal fat: background (no ``total`` class).

Torch-free; the geometry helpers and the intensity model are the CT family's.
"""

from __future__ import annotations

import numpy as np

from BackSplitLib.errors import ImageError
from BackSplitLib.phantom import (
    Phantom, PhantomFamily, _Builder, _check_geometry, _ellipsoid, _fraction, _Grid, _intensities, _organ,
    _place_blob, _random_rotation, _rotation_inplane, _SmoothField, place_lesions,
)
from BackSplitLib.schema import LabelSchema

AUXILIARY_CLASSES = ("liver", "spleen", "kidney", "bowel")
_COLORS = {"liver": (221, 130, 101), "spleen": (157, 108, 162), "kidney": (185, 102, 83),
           "bowel": (255, 253, 229), "metastasis": (255, 60, 60)}
LIVER_SCHEMA: LabelSchema = LabelSchema.from_names(target="metastasis", auxiliary=AUXILIARY_CLASSES, colors=_COLORS)

DEFAULT_SHAPE: tuple[int, int, int] = (64, 80, 80)  # (z, y, x): 80 x 80 x 64 voxels
DEFAULT_SPACING: tuple[float, float, float] = (1.5, 1.5, 2.4)  # (x, y, z) mm
LESION_HOSTS = ("liver", "spleen", "kidney")
_HOST_WEIGHTS = (0.7, 0.15, 0.15)
LESION_CONTRAST_HU = (15.0, 30.0)  # below the host's enhancement; the mimics are drawn from the same range
LESION_RADIUS_VOXELS = (3.5, 7.5)
MIMIC_KINDS = ("bowel_contents", "renal_medulla", "spleen_wedge", "lymph_node")
_AIR_HU = -1000.0


def _lesion_hu(b: _Builder) -> float:
    return b.host_hu["liver"] - float(b.rng.uniform(*LESION_CONTRAST_HU))


def _body(b: _Builder) -> None:
    """Body outline with subcutaneous fat, the muscular wall and visceral fat, a vertebral body: background."""
    g = b.grid
    z, y, x = g.axes()
    hz, hy, hx = g.half
    ax = hx * b.rng.uniform(0.86, 0.95) * (1 + 0.03 * np.sin(z / hz * np.pi + b.rng.uniform(0, 6.3)))
    ay = hy * b.rng.uniform(0.72, 0.82)
    radial = np.sqrt((x / ax) ** 2 + ((y - hy * 0.06) / ay) ** 2)
    fat = float(b.rng.normal(-100, 8))
    b.paint(radial <= 1.0, "background", fat)
    b.paint(radial <= 0.9, "background", float(np.clip(b.rng.normal(50, 5), 40, 60)))
    b.interior = radial <= 0.84
    b.paint(b.interior, "background", fat + float(b.rng.normal(5, 3)))
    b.host_hu["fat"] = fat
    spine = _ellipsoid(g, _fraction(g, (0, 0.62, 0)), _fraction(g, (4.0, 0.14, 0.12)))
    b.paint(spine, "background", float(b.rng.normal(300, 30)))
    radius = 0.065 * g.half[2] * b.rng.uniform(0.9, 1.1)
    in_plane = np.array([0, 1, 1])
    b.paint(_ellipsoid(g, b.jitter((0, 0.38, 0.07), 0.02) * in_plane, np.array([4 * hz, radius, radius])),
            "background", float(b.rng.normal(170, 15)))  # aorta and IVC: enhancing vessels, background
    b.paint(_ellipsoid(g, b.jitter((0, 0.34, -0.17), 0.02) * in_plane, np.array([4 * hz, radius, 1.3 * radius])),
            "background", float(b.rng.normal(140, 10)))


def _organs(b: _Builder) -> None:
    """Enhancing liver and spleen, kidneys (one class) with a darker medulla, bowel loops."""
    g, rng = b.grid, b.rng
    _organ(b, "liver", (0.3, -0.08, -0.4), (0.75, 0.58, 0.45), -20, float(rng.normal(108, 5)))
    spleen = _organ(b, "spleen", (0.45, 0.3, 0.55), (0.38, 0.28, 0.17), 35, float(rng.normal(115, 5)))
    if spleen.any() and rng.random() < 0.6:  # a wedge-shaped hypodensity reaching the splenic capsule
        centre = g.to_mm(np.argwhere(spleen)[rng.integers(np.count_nonzero(spleen))])
        wedge = _ellipsoid(g, centre, _fraction(g, (0.12, 0.1, 0.05)), _random_rotation(rng)) & spleen
        b.paint(wedge, None, _lesion_hu(b))
        b.add_mimic("spleen_wedge", wedge)
    cortex_hu = float(rng.normal(175, 10))
    for side in (1, -1):
        rot = _rotation_inplane(np.deg2rad(25 * side + rng.normal(0, 6)), np.deg2rad(rng.normal(0, 5)))
        centre = b.jitter((-0.3, 0.42, 0.43 * side), 0.03)
        semi = _fraction(g, (0.4, 0.22, 0.15)) * rng.uniform(0.9, 1.1, size=3)
        kidney = _ellipsoid(g, centre, semi, rot, b.wobble_field, 0.05) & b.interior
        b.host_hu["kidney"] = cortex_hu
        b.paint(kidney, "kidney", cortex_hu)
        medulla = _ellipsoid(g, centre, semi * 0.55, rot) & kidney
        b.paint(medulla, None, _lesion_hu(b) - float(rng.uniform(5, 15)))  # a lesion inside stays visible
        b.add_mimic("renal_medulla", medulla)
    wall_hu = float(np.clip(rng.normal(60, 6), 45, 75))
    for _ in range(int(rng.integers(4, 8))):
        centre = _fraction(g, (rng.uniform(-0.85, 0.1), rng.uniform(-0.55, -0.05), rng.uniform(-0.4, 0.4)))
        semi = _fraction(g, rng.uniform([0.12, 0.08, 0.08], [0.3, 0.16, 0.16]))
        rot = _random_rotation(rng)
        free = (b.label == 0) & b.interior & (b.mean_hu < 0)  # loops fill visceral fat only
        outer = _ellipsoid(g, centre, semi, rot, b.wobble_field, 0.05) & free
        lumen = _ellipsoid(g, centre, semi * 0.7, rot) & outer
        if not lumen.any():
            continue
        b.paint(outer, "bowel", wall_hu)
        if rng.random() < 0.4:
            b.paint(lumen, None, float(rng.normal(-850, 50)))  # gas
        else:
            b.paint(lumen, None, _lesion_hu(b))
            b.add_mimic("bowel_contents", lumen)


def _lymph_nodes(b: _Builder) -> None:
    fat = (b.label == 0) & b.interior & (b.mean_hu < 0)
    for _ in range(int(b.rng.integers(1, 4))):
        blob = _place_blob(b, fat, (2.0, 4.0))
        if blob is not None:
            b.paint(blob, "background", _lesion_hu(b))
            b.add_mimic("lymph_node", blob)


def build_liver_phantom(seed: int, shape: tuple[int, int, int] | None = None,
                        spacing: tuple[float, float, float] | None = None, first_host: str | None = None) -> Phantom:
    """The liver-metastasis phantom for ``seed`` (conventions of :func:`phantom.build_phantom`; default
    geometry :data:`DEFAULT_SHAPE` at :data:`DEFAULT_SPACING`)."""
    shape, spacing = _check_geometry(shape, spacing, DEFAULT_SHAPE, DEFAULT_SPACING)
    rng = np.random.default_rng([int(seed), 3])  # never another family's stream for the same seed
    grid = _Grid.make(shape, np.asarray(spacing[::-1], dtype=float))
    b = _Builder(rng=rng, grid=grid, spacing_xyz=spacing, label=np.zeros(shape, dtype=np.uint8),
                 mean_hu=np.full(shape, _AIR_HU, dtype=np.float32),
                 wobble_field=_SmoothField(rng, 0.6 * float(grid.half.max())), schema=LIVER_SCHEMA)
    _body(b)
    _organs(b)
    _lymph_nodes(b)
    hosts, values = place_lesions(b, LESION_HOSTS, _HOST_WEIGHTS, LESION_RADIUS_VOXELS, lambda: _lesion_hu(b),
                                  first_host)
    if not hosts:
        raise ImageError(f"liver phantom seed {seed} with shape {shape} has no room for a lesion; use a larger shape")
    origin = tuple(float(-(n - 1) / 2.0 * s) for n, s in zip(shape[::-1], spacing))
    return Phantom(image=_intensities(b), label=b.label, spacing=spacing, origin=origin, lesion_hosts=hosts,
                   lesion_hu=values, host_hu=dict(b.host_hu), mimics=b.surviving_mimics())


LIVER_FAMILY = PhantomFamily("liver", LIVER_SCHEMA, build_liver_phantom, LESION_HOSTS, "CT",
                             "BackSplit synthetic portal-venous CT phantoms with faint liver metastases, six classes "
                             "(BackSplitLib.phantom_liver)", DEFAULT_SHAPE, DEFAULT_SPACING)
