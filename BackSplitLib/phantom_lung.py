"""The fourth phantom family (issue 20): chest CT with small lung nodules among the pulmonary vessels.

Built to differ on purpose from the abdominal families (:mod:`BackSplitLib.phantom`,
:mod:`BackSplitLib.phantom_mr`, :mod:`BackSplitLib.phantom_liver`):

- **five classes**: background, lung, airway, vessel, nodule (the chest wall, mediastinum and heart are
  background);
- **another geometry**: 80 x 64 x 48 voxels (x, y, z) at 1.1 x 1.1 x 1.6 mm by default;
- **tiny targets of high contrast**: solid nodules (-50..40 HU) and part-solid ones (-550..-350 HU, fainter)
  of 1.5-3.5 in-plane voxels radius (a few tens of voxels each), in aerated lung (-870 HU); the whole
  target is well under 0.1 % of the volume;
- **mimics** of the nodules' size and density, each labelled as an automatic organ map would label it
  (TotalSegmentator v2 ``total``: lung lobes merged to ``lung``, ``trachea`` / bronchi to ``airway``,
  ``lung_vessels`` of its ``lung_vessels`` task to ``vessel``):

  - vessel cross-sections and bifurcations (the branching pulmonary vessel tree): ``vessel``;
  - a mucus plug in a bronchus: ``airway``;
  - a band-like scar (soft tissue in the lung): ``lung`` (lobe masks cover scars);
  - mediastinal lymph nodes: background.

Torch-free; the geometry helpers and the intensity model are the CT family's.
"""

from __future__ import annotations

import numpy as np

from BackSplitLib.errors import ImageError
from BackSplitLib.phantom import (
    Phantom, PhantomFamily, _Builder, _check_geometry, _ellipsoid, _fraction, _Grid, _intensities, _place_blob,
    _random_rotation, _SmoothField, place_lesions,
)
from BackSplitLib.schema import LabelSchema

AUXILIARY_CLASSES = ("lung", "airway", "vessel")
_COLORS = {"lung": (197, 165, 145), "airway": (182, 228, 255), "vessel": (216, 101, 79), "nodule": (255, 60, 60)}
LUNG_SCHEMA: LabelSchema = LabelSchema.from_names(target="nodule", auxiliary=AUXILIARY_CLASSES, colors=_COLORS)

DEFAULT_SHAPE: tuple[int, int, int] = (48, 64, 80)  # (z, y, x): 80 x 64 x 48 voxels
DEFAULT_SPACING: tuple[float, float, float] = (1.1, 1.1, 1.6)  # (x, y, z) mm
LESION_HOSTS = ("lung",)
SOLID_HU = (-50.0, 40.0)
PART_SOLID_HU = (-550.0, -350.0)
LESION_RADIUS_VOXELS = (1.5, 3.5)
MIMIC_KINDS = ("vessel", "mucus_plug", "scar", "lymph_node")
_AIR_HU = -1000.0
_LUNG_HU = -870.0


def _nodule_hu(b: _Builder) -> float:
    return float(b.rng.uniform(*(SOLID_HU if b.rng.random() < 0.7 else PART_SOLID_HU)))


def _axes_along(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows: ``direction`` (unit) and two unit vectors orthogonal to it (an ellipsoid's axes)."""
    helper = rng.normal(size=3)
    second = helper - helper @ direction * direction
    second /= np.linalg.norm(second)
    return np.stack([direction, second, np.cross(direction, second)])


def _tube(b: _Builder, start: np.ndarray, direction: np.ndarray, length: float, radius: float) -> np.ndarray:
    """A straight cylinder-like segment (an elongated ellipsoid) from ``start`` along ``direction`` (mm)."""
    centre = start + direction * length / 2
    return _ellipsoid(b.grid, centre, np.array([length / 2 + radius, radius, radius]), _axes_along(direction, b.rng))


def _body(b: _Builder) -> tuple[np.ndarray, np.ndarray]:
    """Chest wall, ribs, mediastinum with the heart: background; two lungs; returns the lung masks."""
    g, rng = b.grid, b.rng
    z, y, x = g.axes()
    hz, hy, hx = g.half
    radial = np.sqrt((x / (hx * rng.uniform(0.9, 0.97))) ** 2 + ((y - hy * 0.05) / (hy * rng.uniform(0.8, 0.9))) ** 2)
    radial = np.broadcast_to(radial, g.shape)
    b.paint(radial <= 1.0, "background", float(rng.normal(-100, 8)))
    b.paint(radial <= 0.92, "background", float(rng.normal(50, 5)))
    for angle in np.linspace(0, 2 * np.pi, 14, endpoint=False) + rng.uniform(0, 0.3):  # rib cross-sections
        centre = np.array([0.0, 0.87 * hy * np.sin(angle) * 0.9 + hy * 0.05, 0.87 * hx * np.cos(angle) * 0.93])
        b.paint(_ellipsoid(g, centre, np.array([0.3 * hz, 0.05 * hy, 0.05 * hx])) & (radial <= 0.95), "background",
                float(rng.normal(500, 60)))
    lungs = []
    for side in (-1, 1):
        centre = b.jitter((0.0, 0.0, 0.45 * side), 0.03)
        lung = _ellipsoid(g, centre, _fraction(g, (1.1, 0.68, 0.36)) * rng.uniform(0.92, 1.05, size=3),
                          None, b.wobble_field, 0.06) & (radial <= 0.84)
        b.paint(lung, "lung", _LUNG_HU + float(rng.normal(0, 15)))
        lungs.append(lung)
    b.host_hu["lung"] = _LUNG_HU
    heart = _ellipsoid(g, b.jitter((-0.3, -0.2, 0.08), 0.03), _fraction(g, (0.5, 0.35, 0.28)), _random_rotation(rng))
    b.paint(heart & (radial <= 0.84), "background", float(rng.normal(45, 5)))
    return lungs[0] & ~heart, lungs[1] & ~heart


def _airways(b: _Builder) -> None:
    """Trachea down the mediastinum, a main bronchus into each lung (air lumen, soft-tissue wall)."""
    g, rng = b.grid, b.rng
    carina = _fraction(g, (0.1, -0.05, 0.0)) + rng.normal(0, 1.0, size=3)
    top = carina + np.array([2 * g.half[0], 0, 0])
    radius = 0.06 * g.half[2]
    wall_hu, plugged = float(rng.normal(-100, 20)), bool(rng.random() < 0.5)
    segments = [(top, np.array([-1.0, 0, 0]), 2 * g.half[0], radius)]
    for side in (-1, 1):
        direction = np.array([-0.6, rng.normal(0.1, 0.05), 0.8 * side])
        segments.append((carina, direction / np.linalg.norm(direction), 0.5 * g.half[2], 0.7 * radius))
    for i, (start, direction, length, r) in enumerate(segments):
        outer = _tube(b, start, direction, length, r)
        lumen = _tube(b, start, direction, length, 0.65 * r)
        b.paint(outer, "airway", wall_hu)
        b.paint(lumen, None, float(rng.normal(-960, 15)))
        if i > 0 and plugged and i == 1:  # a mucus plug filling part of one bronchus
            plug = lumen & _ellipsoid(g, start + direction * length * rng.uniform(0.5, 0.9), np.full(3, 1.5 * r))
            b.paint(plug, None, _nodule_hu(b))
            b.add_mimic("mucus_plug", plug)


def _vessel_tree(b: _Builder, lung: np.ndarray, side: int) -> None:
    """A branching vessel tree from the hilum: segments that narrow and fork; bright where the soft
    tissue fills the voxel, so cross-sections and forks look like nodules."""
    g, rng = b.grid, b.rng
    hilum = _fraction(g, (0.0, 0.05, 0.22 * side)) + rng.normal(0, 1.5, size=3)
    stack = []
    for _ in range(3):
        direction = np.array([rng.normal(0, 0.7), rng.normal(0, 0.5), 0.9 * side])
        stack.append((hilum, direction / np.linalg.norm(direction), 0.09 * g.half[2] * rng.uniform(0.9, 1.1), 0))
    vessel_hu = float(rng.normal(40, 8))
    while stack:
        start, direction, radius, depth = stack.pop()
        length = float(rng.uniform(0.25, 0.45)) * g.half[2]
        segment = _tube(b, start, direction, length, radius) & (lung | (b.label == 0)) & (b.mean_hu < 100)
        b.paint(segment & lung, "vessel", vessel_hu)
        b.add_mimic("vessel", segment & lung)
        if depth < 3 and radius > 0.6:
            end = start + direction * length
            for _ in range(2):
                child = direction + rng.normal(0, 0.45, size=3)
                stack.append((end, child / np.linalg.norm(child), radius * rng.uniform(0.6, 0.8), depth + 1))


def _scars_and_nodes(b: _Builder, lungs: tuple[np.ndarray, np.ndarray]) -> None:
    g, rng = b.grid, b.rng
    if rng.random() < 0.6:  # a band-like scar: flat soft-tissue plate inside one lung, labelled lung
        lung = lungs[int(rng.integers(2))] & (b.label == LUNG_SCHEMA.labels["lung"])
        if lung.any():
            centre = g.to_mm(np.argwhere(lung)[rng.integers(np.count_nonzero(lung))])
            scar = _ellipsoid(g, centre, _fraction(g, (0.15, 0.12, 0.02)), _random_rotation(rng)) & lung
            b.paint(scar, None, _nodule_hu(b))
            b.add_mimic("scar", scar)
    mediastinum = (b.label == 0) & np.broadcast_to(np.abs(g.axes()[2]) < 0.2 * g.half[2], g.shape) & (b.mean_hu > 0) & (b.mean_hu < 100)
    for _ in range(int(rng.integers(1, 3))):
        blob = _place_blob(b, mediastinum, (1.5, 3.0))
        if blob is not None:
            b.paint(blob, "background", float(rng.uniform(*SOLID_HU)) + 20)
            b.add_mimic("lymph_node", blob)


def build_lung_phantom(seed: int, shape: tuple[int, int, int] | None = None,
                       spacing: tuple[float, float, float] | None = None, first_host: str | None = None) -> Phantom:
    """The lung-nodule phantom for ``seed`` (conventions of :func:`phantom.build_phantom`; default geometry
    :data:`DEFAULT_SHAPE` at :data:`DEFAULT_SPACING`)."""
    shape, spacing = _check_geometry(shape, spacing, DEFAULT_SHAPE, DEFAULT_SPACING)
    rng = np.random.default_rng([int(seed), 4])  # never another family's stream for the same seed
    grid = _Grid.make(shape, np.asarray(spacing[::-1], dtype=float))
    b = _Builder(rng=rng, grid=grid, spacing_xyz=spacing, label=np.zeros(shape, dtype=np.uint8),
                 mean_hu=np.full(shape, _AIR_HU, dtype=np.float32),
                 wobble_field=_SmoothField(rng, 0.6 * float(grid.half.max())), schema=LUNG_SCHEMA)
    lungs = _body(b)
    _airways(b)
    for lung, side in zip(lungs, (-1, 1)):
        _vessel_tree(b, lung & (b.label == LUNG_SCHEMA.labels["lung"]), side)
    _scars_and_nodes(b, lungs)
    hosts, values = place_lesions(b, LESION_HOSTS, (1.0,), LESION_RADIUS_VOXELS, lambda: _nodule_hu(b), first_host)
    if not hosts:
        raise ImageError(f"lung phantom seed {seed} with shape {shape} has no room for a nodule; use a larger shape")
    origin = tuple(float(-(n - 1) / 2.0 * s) for n, s in zip(shape[::-1], spacing))
    return Phantom(image=_intensities(b), label=b.label, spacing=spacing, origin=origin, lesion_hosts=hosts,
                   lesion_hu=values, host_hu=dict(b.host_hu), mimics=b.surviving_mimics())


LUNG_FAMILY = PhantomFamily("lung", LUNG_SCHEMA, build_lung_phantom, LESION_HOSTS, "CT",
                            "BackSplit synthetic chest CT phantoms with small lung nodules among vessels, five classes "
                            "(BackSplitLib.phantom_lung)", DEFAULT_SHAPE, DEFAULT_SPACING)
