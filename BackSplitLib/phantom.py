"""Built-in synthetic CT-like abdominal phantoms: organs, small cyst-like lesions and lesion mimics.

Each phantom is seeded and deterministic. The body holds subcutaneous and visceral fat, the muscular body
wall, paraspinal and psoas muscles, a spine, the aorta and IVC, liver, spleen, two kidneys and bowel loops:
these are the *auxiliary* classes of :data:`PHANTOM_SCHEMA`. The *target* (``lesion``) is 1-4 small
low-attenuation cysts (radius 2-8 in-plane voxels, 10-30 HU) inside the liver (~60 HU) or a kidney
(~150 HU). **Lesion mimics** have the lesions' intensity and size but are not lesions, so only their
context tells them apart - which is what a binary model cannot learn well and auxiliary classes help
with. Each mimic carries the label an automatic organ map would give it, with TotalSegmentator v2's
``total`` class list as the reference; a class that would be the target itself (``kidney_cyst_left/right``
of that list) is never auxiliary, so no mimic leaks the label:

- gallbladder beside the liver: ``gallbladder`` (a ``total`` class, so an auxiliary class here);
- fluid-filled bowel loops: ``bowel`` (``total``'s small_bowel / colon / duodenum, merged);
- renal sinus (fluid) in each kidney: background (no ``total`` class covers the renal pelvis);
- cysts in the spleen: ``spleen`` (the ``total`` spleen mask covers its cysts);
- cysts free in visceral fat: background (no ``total`` class).

A second family with other anatomy, modality, hosts and mimics is in :mod:`BackSplitLib.phantom_mr`.

Shapes are randomly sized, rotated and perturbed ellipsoids placed relative to the volume size, so small
test volumes work. The intensity model is: tissue means per case, a smooth texture, partial-volume blur,
a multiplicative bias (cupping) on attenuation and Gaussian noise. Torch-free; uses SimpleITK for the
blur and distance maps.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from BackSplitLib.dataset import write_dataset_json
from BackSplitLib.errors import DatasetError, ImageError
from BackSplitLib.atomic import staged_folder
from BackSplitLib.io import write_image
from BackSplitLib.schema import LabelSchema

AUXILIARY_CLASSES = (
    "fat", "muscle", "spine", "aorta", "ivc", "liver", "spleen", "kidney_left", "kidney_right", "bowel",
    "gallbladder",
)
# Colours close to Slicer's anatomical colour table, so phantom segmentations look familiar.
_COLORS = {
    "fat": (230, 220, 70), "muscle": (192, 104, 88), "spine": (241, 214, 145), "aorta": (216, 101, 79),
    "ivc": (0, 151, 206), "liver": (221, 130, 101), "spleen": (157, 108, 162),
    "kidney_left": (185, 102, 83), "kidney_right": (185, 122, 83), "bowel": (255, 253, 229),
    "gallbladder": (139, 150, 98),
}
PHANTOM_SCHEMA: LabelSchema = LabelSchema.from_names(target="lesion", auxiliary=AUXILIARY_CLASSES, colors=_COLORS)

DEFAULT_SHAPE: tuple[int, int, int] = (64, 80, 96)  # (z, y, x), numpy order
DEFAULT_SPACING: tuple[float, float, float] = (1.5, 1.5, 2.5)  # (x, y, z) mm, SimpleITK order
MIN_SHAPE: tuple[int, int, int] = (12, 24, 24)

LESION_HOSTS = ("liver", "kidney_left", "kidney_right")
LESION_HU_RANGE: tuple[float, float] = (10.0, 30.0)  # cyst-like; mimics are drawn from the same range
LESION_RADIUS_VOXELS: tuple[float, float] = (2.0, 8.0)  # in-plane voxels
FIRST_HOST_ATTEMPTS = 20  # tries to place a test case's first lesion in its assigned host
MIN_BLOB_VOXELS = 10  # every lesion and cyst mimic is at least this big (evaluation's default threshold)
MIMIC_KINDS = ("gallbladder", "bowel_fluid", "renal_sinus", "spleen_cyst", "free_cyst")
_AIR_HU = -1000.0
DATASET_MARKER = "phantom"  # dataset.json key that marks a folder this module may overwrite


@dataclass
class Phantom:
    """One phantom as arrays in (z, y, x) order, with what was placed where (for tests and figures)."""

    image: np.ndarray  # float32 HU
    label: np.ndarray  # uint8, PHANTOM_SCHEMA values
    spacing: tuple[float, float, float]  # (x, y, z) mm, SimpleITK order
    origin: tuple[float, float, float]
    lesion_hosts: list[str] = field(default_factory=list)
    lesion_hu: list[float] = field(default_factory=list)
    host_hu: dict[str, float] = field(default_factory=dict)
    mimics: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> bool mask

    def to_images(self) -> tuple[sitk.Image, sitk.Image]:
        """SimpleITK image (float32 HU) and label (uint8) on the same grid."""
        image = sitk.GetImageFromArray(self.image)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        label = sitk.GetImageFromArray(self.label)
        label.CopyInformation(image)
        return image, label


# --------------------------------------------------------------------------- geometry helpers
@dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in mm from the volume centre, as broadcastable (z, y, x) vectors."""

    shape: tuple[int, int, int]
    spacing_zyx: np.ndarray
    half: np.ndarray  # half extents (z, y, x) in mm: organ positions and sizes are fractions of these

    @classmethod
    def make(cls, shape: tuple[int, int, int], spacing_zyx: np.ndarray) -> _Grid:
        return cls(tuple(shape), spacing_zyx, np.asarray(shape) * spacing_zyx / 2.0)

    def axes(self, box: tuple[slice, slice, slice] | None = None) -> list[np.ndarray]:
        box = box or tuple(slice(0, n) for n in self.shape)
        out = []
        for axis, (n, s, sl) in enumerate(zip(self.shape, self.spacing_zyx, box)):
            idx = np.arange(sl.start, sl.stop, dtype=np.float32)
            coord = (idx - (n - 1) / 2.0) * np.float32(s)
            view = [1, 1, 1]
            view[axis] = -1
            out.append(coord.reshape(view))
        return out

    def box_around(self, center_mm: np.ndarray, reach_mm: float) -> tuple[slice, slice, slice] | None:
        """Index box that holds a ball of radius ``reach_mm``; None when it lies outside the volume."""
        centre_idx = center_mm / self.spacing_zyx + (np.asarray(self.shape) - 1) / 2.0
        reach_idx = reach_mm / self.spacing_zyx
        lo = np.maximum(np.floor(centre_idx - reach_idx).astype(int), 0)
        hi = np.minimum(np.ceil(centre_idx + reach_idx).astype(int) + 1, self.shape)
        if np.any(hi <= lo):
            return None
        return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))

    def to_mm(self, index: np.ndarray) -> np.ndarray:
        return (index - (np.asarray(self.shape) - 1) / 2.0) * self.spacing_zyx


class _SmoothField:
    """Band-limited random field (random Fourier features, unit variance) evaluable on any sub-box.

    Cheaper than upsampling coarse noise and, being a function of position, the same field can perturb
    a small shape evaluated only inside its bounding box.
    """

    def __init__(self, rng: np.random.Generator, wavelength_mm: float, terms: int = 6):
        self.k = rng.normal(0.0, 2 * np.pi / wavelength_mm, size=(terms, 3)).astype(np.float32)
        self.phase = rng.uniform(0, 2 * np.pi, size=terms).astype(np.float32)
        self.scale = np.float32(np.sqrt(2.0 / terms))

    def __call__(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        total = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=np.float32)
        for (kz, ky, kx), phase in zip(self.k, self.phase):
            total += np.cos(kz * z + ky * y + kx * x + phase)
        return total * self.scale


def _rotation_inplane(angle: float, tilt: float = 0.0) -> np.ndarray:
    """Rotation of (z, y, x) vectors: ``angle`` in the axial (y, x) plane, then ``tilt`` in (z, x)."""
    c, s = np.cos(angle), np.sin(angle)
    axial = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    ct, st = np.cos(tilt), np.sin(tilt)
    coronal = np.array([[ct, 0, -st], [0, 1, 0], [st, 0, ct]])
    return coronal @ axial


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly random 3D rotation (QR of a Gaussian matrix with the sign fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _ellipsoid(grid: _Grid, center_mm: np.ndarray, semi_mm: np.ndarray, rotation: np.ndarray | None = None,
               noise: _SmoothField | None = None, wobble: float = 0.0) -> np.ndarray:
    """Boolean mask of a rotated ellipsoid whose surface is pushed in/out by ``wobble`` x a smooth field.

    Evaluated only inside its bounding box, so many small shapes stay cheap on a full-size volume.
    """
    mask = np.zeros(grid.shape, dtype=bool)
    box = grid.box_around(center_mm, float(np.max(semi_mm)) * (1.0 + 3.5 * wobble))
    if box is None:
        return mask
    z, y, x = grid.axes(box)
    d = (z - np.float32(center_mm[0]), y - np.float32(center_mm[1]), x - np.float32(center_mm[2]))
    rot = np.eye(3) if rotation is None else rotation
    q = np.zeros(np.broadcast_shapes(z.shape, y.shape, x.shape), dtype=np.float32)
    for i in range(3):
        u = rot[i, 0] * d[0] + rot[i, 1] * d[1] + rot[i, 2] * d[2]
        q += (u / np.float32(semi_mm[i])) ** 2
    limit = 1.0 if noise is None or wobble == 0 else (1.0 + wobble * noise(z, y, x)) ** 2
    mask[box] = q <= limit
    return mask


def _fraction(grid: _Grid, frac) -> np.ndarray:
    """Millimetres from fractions of the half extents (z, y, x)."""
    return np.asarray(frac, dtype=float) * grid.half


def _distance_inside(mask: np.ndarray, spacing_xyz: tuple[float, float, float]) -> np.ndarray:
    """Distance in mm from each voxel inside ``mask`` to its border (<= 0 outside), via SimpleITK."""
    if not mask.any():
        return np.full(mask.shape, -1.0, dtype=np.float32)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(spacing_xyz)
    dist = sitk.SignedMaurerDistanceMap(image, insideIsPositive=True, squaredDistance=False, useImageSpacing=True)
    return sitk.GetArrayFromImage(dist)


# --------------------------------------------------------------------------- anatomy
@dataclass
class _Builder:
    """Paints one phantom: labels and per-voxel mean HU, then the intensity model on top."""

    rng: np.random.Generator
    grid: _Grid
    spacing_xyz: tuple[float, float, float]
    label: np.ndarray
    mean_hu: np.ndarray  # mean intensity (HU here; arbitrary MR units in phantom_mr)
    wobble_field: _SmoothField  # perturbs organ and blob surfaces
    schema: LabelSchema = PHANTOM_SCHEMA
    interior: np.ndarray | None = None  # the abdominal cavity inside the muscular wall
    mimics: dict[str, np.ndarray] = field(default_factory=dict)
    mimic_values: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> intensity painted (NaN elsewhere)
    host_hu: dict[str, float] = field(default_factory=dict)
    placed: list[tuple[np.ndarray, float]] = field(default_factory=list)  # (centre mm, radius mm)

    def paint(self, mask: np.ndarray, name: str | None, hu: float) -> None:
        """Label ``mask`` as class ``name`` (None keeps the labels) with mean intensity ``hu``."""
        if name is not None:
            self.label[mask] = self.schema.labels[name]
        self.mean_hu[mask] = hu

    def add_mimic(self, kind: str, mask: np.ndarray) -> None:
        """Record ``mask`` (just painted) as a mimic of ``kind``, with the intensity it was painted with."""
        self.mimics[kind] = self.mimics.get(kind, np.zeros_like(mask)) | mask
        painted = self.mimic_values.setdefault(kind, np.full(mask.shape, np.nan, dtype=np.float32))
        painted[mask] = self.mean_hu[mask]

    def surviving_mimics(self) -> dict[str, np.ndarray]:
        """Each mimic's voxels that later structures (vessels, nodes, lesions) did not paint over."""
        return {kind: mask & (self.mean_hu == self.mimic_values[kind]) for kind, mask in self.mimics.items()}

    def fluid_hu(self) -> float:
        return float(self.rng.uniform(*LESION_HU_RANGE))

    def jitter(self, frac, amount: float = 0.04) -> np.ndarray:
        return _fraction(self.grid, np.asarray(frac) + self.rng.uniform(-amount, amount, size=3))


def _body(b: _Builder) -> None:
    """Elliptic body: subcutaneous fat, the muscular wall, then visceral fat inside."""
    z, y, x = b.grid.axes()
    hz, hy, hx = b.grid.half
    ax = hx * b.rng.uniform(0.86, 0.95) * (1 + 0.03 * np.sin(z / hz * np.pi + b.rng.uniform(0, 6.3)))
    ay = hy * b.rng.uniform(0.74, 0.82)
    cy = hy * 0.06
    radial = np.sqrt((x / ax) ** 2 + ((y - cy) / ay) ** 2)
    subcutaneous = b.rng.uniform(0.07, 0.14)
    wall = b.rng.uniform(0.05, 0.08)
    b.host_hu["fat"] = float(b.rng.normal(-100, 8))
    b.host_hu["muscle"] = float(np.clip(b.rng.normal(50, 5), 40, 60))  # stays out of the fluid range
    b.paint(radial <= 1.0, "fat", b.host_hu["fat"])
    b.paint(radial <= 1.0 - subcutaneous, "muscle", b.host_hu["muscle"])
    b.interior = radial <= 1.0 - subcutaneous - wall
    b.paint(b.interior, "fat", b.host_hu["fat"] + float(b.rng.normal(5, 3)))


def _spine_and_muscles(b: _Builder) -> None:
    """Vertebral body with cortex and discs, posterior elements, paraspinal and psoas muscles."""
    g, rng = b.grid, b.rng
    z, y, x = g.axes()
    muscle = b.host_hu["muscle"]
    grows = np.clip((0.4 - z / g.half[0]) / 1.4, 0, 1)  # the psoas thickens caudally, absent cranially
    for side in (-1, 1):
        paraspinal = _ellipsoid(g, _fraction(g, (0, 0.62, 0.17 * side)), _fraction(g, (4.0, 0.15, 0.13)))
        b.paint(paraspinal, "muscle", muscle)
        _, cy, cx = _fraction(g, (0, 0.33, 0.24 * side))
        radial = ((y - cy) / (0.12 * g.half[1])) ** 2 + ((x - cx) / (0.10 * g.half[2])) ** 2
        b.paint((radial <= grows ** 2) & (grows > 0), "muscle", muscle)
    centre = _fraction(g, (0, 0.38 + rng.uniform(-0.02, 0.02), 0))
    semi = _fraction(g, (4.0, 0.13, 0.11))
    body = _ellipsoid(g, centre, semi)
    cortex = body & ~_ellipsoid(g, centre, semi * np.array([1, 0.78, 0.78]))
    period = rng.uniform(24, 32)  # vertebra + disc, mm
    disc = np.broadcast_to(((z - rng.uniform(0, period)) % period) < 6.0, body.shape)
    cancellous = float(rng.normal(250, 30))
    b.host_hu["spine"] = cancellous
    b.paint(body, "spine", cancellous)
    b.paint(cortex, "spine", float(rng.normal(650, 50)))
    b.paint(body & disc, "spine", float(rng.normal(90, 8)))
    posterior = _ellipsoid(g, _fraction(g, (0, 0.6, 0)), _fraction(g, (4.0, 0.13, 0.045)))
    b.paint(posterior, "spine", float(rng.normal(500, 50)))


def _vessels(b: _Builder) -> None:
    """Aorta (left-anterior of the spine) and IVC (to its right), running through every slice."""
    g, rng = b.grid, b.rng
    radius = 0.065 * g.half[2] * rng.uniform(0.9, 1.1)
    in_plane = np.array([0, 1, 1])  # centred in z, long enough to cross every slice
    aorta = _ellipsoid(g, b.jitter((0, 0.16, 0.07), 0.02) * in_plane, np.array([4 * g.half[0], radius, radius]))
    b.host_hu["aorta"] = float(rng.normal(170, 20))
    b.paint(aorta, "aorta", b.host_hu["aorta"])
    ivc = _ellipsoid(g, b.jitter((0, 0.12, -0.17), 0.02) * in_plane,
                     np.array([4 * g.half[0], 0.9 * radius, 1.3 * radius]))
    b.host_hu["ivc"] = float(rng.normal(125, 15))
    b.paint(ivc & ~aorta, "ivc", b.host_hu["ivc"])


def _organ(b: _Builder, name: str, centre_frac, semi_frac, angle_deg: float, hu: float,
           jitter: float = 0.04, wobble: float = 0.08) -> np.ndarray:
    """A perturbed, rotated ellipsoid organ inside the abdominal cavity."""
    rot = _rotation_inplane(np.deg2rad(angle_deg + b.rng.normal(0, 8)), np.deg2rad(b.rng.normal(0, 5)))
    semi = _fraction(b.grid, semi_frac) * b.rng.uniform(0.9, 1.1, size=3)
    mask = _ellipsoid(b.grid, b.jitter(centre_frac, jitter), semi, rot, b.wobble_field, wobble) & b.interior
    b.host_hu[name] = hu
    b.paint(mask, name, hu)
    return mask


def _organs(b: _Builder) -> None:
    """Liver (patient right = -x in LPS), spleen (left), two kidneys with renal sinus, gallbladder."""
    rng = b.rng
    _organ(b, "liver", (0.35, -0.08, -0.42), (0.7, 0.55, 0.42), -20, float(rng.normal(60, 4)))
    _organ(b, "spleen", (0.45, 0.28, 0.55), (0.35, 0.28, 0.16), 35, float(rng.normal(70, 5)))
    kidney_hu = float(rng.normal(150, 10))
    for name, side, dz in (("kidney_left", 1, 0.08), ("kidney_right", -1, 0.0)):
        rot = _rotation_inplane(np.deg2rad(25 * side + rng.normal(0, 6)), np.deg2rad(rng.normal(0, 5)))
        centre = b.jitter((-0.3 + dz, 0.4, 0.43 * side), 0.03)
        semi = _fraction(b.grid, (0.38, 0.22, 0.15)) * rng.uniform(0.9, 1.1, size=3)
        kidney = _ellipsoid(b.grid, centre, semi, rot, b.wobble_field, 0.05) & b.interior
        b.host_hu[name] = kidney_hu + float(rng.normal(0, 4))
        b.paint(kidney, name, b.host_hu[name])
        # Renal sinus: fluid-density hilum on the medial side, a hole in the kidney label.
        medial = rot.T @ np.array([0.0, 0.0, -side * 0.5 * semi[2]])
        sinus = _ellipsoid(b.grid, centre + medial, semi * np.array([0.55, 0.4, 0.45]), rot) & kidney
        b.paint(sinus, "background", b.fluid_hu())
        b.add_mimic("renal_sinus", sinus)
    # Gallbladder: a pear-shaped fluid sac at the liver's inferior-medial edge, labelled gallbladder.
    rot = _rotation_inplane(np.deg2rad(rng.normal(-30, 10)), np.deg2rad(rng.normal(20, 8)))
    gallbladder = _ellipsoid(b.grid, b.jitter((-0.2, -0.38, -0.18), 0.04), _fraction(b.grid, (0.22, 0.13, 0.1)),
                             rot, b.wobble_field, 0.05) & b.interior
    b.paint(gallbladder, "gallbladder", b.fluid_hu())
    b.add_mimic("gallbladder", gallbladder)


def _bowel(b: _Builder) -> None:
    """Bowel loops in the anterior-inferior cavity: wall plus gas, fluid (a mimic) or an air-fluid level."""
    g, rng = b.grid, b.rng
    loops = int(rng.integers(4, 8))
    kinds = ["fluid"] + list(rng.choice(["gas", "fluid", "level"], size=loops - 1, p=[0.45, 0.35, 0.2]))
    wall_hu = float(np.clip(rng.normal(45, 5), 38, 55))
    for kind in kinds:
        centre = _fraction(g, (rng.uniform(-0.85, 0.15), rng.uniform(-0.55, -0.05), rng.uniform(-0.4, 0.4)))
        semi = _fraction(g, rng.uniform([0.12, 0.08, 0.08], [0.3, 0.16, 0.16]))
        rot = _random_rotation(rng)
        free = (b.label == PHANTOM_SCHEMA.labels["fat"]) & b.interior  # loops fill visceral fat only
        outer = _ellipsoid(g, centre, semi, rot, b.wobble_field, 0.05) & free
        lumen = _ellipsoid(g, centre, semi * 0.7, rot) & outer
        if not lumen.any():
            continue
        b.paint(outer, "bowel", wall_hu)
        if kind == "gas":
            b.paint(lumen, None, float(rng.normal(-850, 50)))
            continue
        fluid = lumen
        if kind == "level":  # gas rises anteriorly (lower y in LPS) in a supine patient
            _, y, _ = g.axes()
            gas = lumen & (y < centre[1] - 0.2 * semi.min())
            b.paint(gas, None, float(rng.normal(-850, 50)))
            fluid = lumen & ~gas
        b.paint(fluid, None, b.fluid_hu())
        b.add_mimic("bowel_fluid", fluid)


def _place_blob(b: _Builder, host: np.ndarray, radius_voxels: tuple[float, float]) -> np.ndarray | None:
    """A random cyst-like blob inside ``host``, not touching earlier blobs; None if none fits."""
    g, rng = b.grid, b.rng
    depth = _distance_inside(host, b.spacing_xyz)
    inplane = float(min(g.spacing_zyx[1:]))
    lo, hi = radius_voxels
    wanted = rng.uniform(lo, hi) * inplane
    radius = min(wanted, 0.9 * float(depth.max()))
    if radius < lo * inplane * 0.75:
        return None
    semi = radius * rng.uniform(0.75, 1.25, size=3)
    candidates = np.argwhere(depth >= 0.8 * semi.max())
    if len(candidates) == 0:
        return None
    points = g.to_mm(candidates)
    for centre, r in b.placed:  # keep blobs apart so each stays one connected component
        # 1.5x: the wobble can push a surface out by up to ~40 %
        points_ok = np.linalg.norm(points - centre, axis=1) > 1.5 * (r + semi.max()) + 2 * inplane
        points = points[points_ok]
    if len(points) == 0:
        return None
    centre = points[rng.integers(len(points))]
    blob = _ellipsoid(g, centre, semi, _random_rotation(rng), b.wobble_field, 0.12) & host
    if np.count_nonzero(blob) < MIN_BLOB_VOXELS:  # a speck would be below evaluation's min_lesion_voxels
        return None
    b.placed.append((centre, float(semi.max())))
    return blob


def _cyst_mimics(b: _Builder) -> None:
    """Cysts in the spleen (labelled spleen) and free in visceral fat (labelled background)."""
    spleen_value, fat_value = PHANTOM_SCHEMA.labels["spleen"], PHANTOM_SCHEMA.labels["fat"]
    for _ in range(int(b.rng.integers(0, 3))):
        blob = _place_blob(b, b.label == spleen_value, (2.0, 5.0))
        if blob is not None:
            b.paint(blob, None, b.fluid_hu())
            b.add_mimic("spleen_cyst", blob)
    for _ in range(int(b.rng.integers(1, 3))):
        blob = _place_blob(b, (b.label == fat_value) & b.interior, (2.0, 5.0))
        if blob is not None:
            b.paint(blob, "background", b.fluid_hu())
            b.add_mimic("free_cyst", blob)


def _lesions(b: _Builder, first_host: str | None = None) -> tuple[list[str], list[float]]:
    """1-4 cyst-like lesions in the liver and kidneys; at least one is always placed."""
    return place_lesions(b, LESION_HOSTS, (0.5, 0.25, 0.25), LESION_RADIUS_VOXELS, b.fluid_hu, first_host)


def place_lesions(b: _Builder, hosts: Sequence[str], weights: Sequence[float], radius_voxels: tuple[float, float],
                  value: Callable[[], float], first_host: str | None = None) -> tuple[list[str], list[float]]:
    """1-4 blobs of the schema's target in ``hosts`` (drawn with ``weights``), each with intensity
    ``value()``; returns their hosts and intensities. ``first_host`` puts the first one there when it fits
    (a test set can then hold every host); when hosts stay full, ``hosts[0]`` (every family lists its largest
    host first) takes the rest, so at least one lesion is always placed."""
    wanted = int(b.rng.integers(1, 5))
    placed, values = [], []
    attempts = 0
    extra = FIRST_HOST_ATTEMPTS if first_host is not None else 0  # without it: the draws of earlier versions
    while len(placed) < wanted and attempts < 4 * wanted + 8 + extra:
        attempts += 1
        if first_host is not None and not placed and attempts <= FIRST_HOST_ATTEMPTS:
            name = first_host
        else:
            name = hosts[0] if attempts > 4 * wanted + extra else str(b.rng.choice(hosts, p=weights))
        blob = _place_blob(b, b.label == b.schema.labels[name], radius_voxels)
        if blob is None:
            continue
        intensity = value()
        b.paint(blob, b.schema.target, intensity)
        placed.append(name)
        values.append(intensity)
    return placed, values


# --------------------------------------------------------------------------- intensity model
def _intensities(b: _Builder) -> np.ndarray:
    """HU image: texture, partial-volume blur, multiplicative cupping/bias on attenuation, noise."""
    rng, g = b.rng, b.grid
    z, y, x = g.axes()
    hu = b.mean_hu + 4.0 * _SmoothField(rng, 12.0)(z, y, x)
    image = sitk.GetImageFromArray(hu.astype(np.float32))
    image.SetSpacing(b.spacing_xyz)
    # Partial volume: a Gaussian point-spread of about 1 mm in-plane, wider along the slices.
    sigma_xyz = [0.45 * b.spacing_xyz[0], 0.45 * b.spacing_xyz[1], 0.4 * b.spacing_xyz[2]]
    hu = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma_xyz))
    bias = rng.uniform(0.003, 0.01) * _SmoothField(rng, 4.0 * float(g.half.max()), terms=3)(z, y, x)
    hu = (hu - _AIR_HU) * (1.0 + bias) + _AIR_HU
    hu += rng.normal(0.0, rng.uniform(8.0, 14.0), size=hu.shape).astype(np.float32)
    return np.clip(hu, -1024.0, 3071.0).astype(np.float32)


# --------------------------------------------------------------------------- public API
def _check_geometry(shape, spacing, default_shape: tuple[int, int, int] = DEFAULT_SHAPE,
                    default_spacing: tuple[float, float, float] = DEFAULT_SPACING,
                    ) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    shape = tuple(int(n) for n in (shape or default_shape))
    spacing = tuple(float(s) for s in (spacing or default_spacing))
    if len(shape) != 3 or any(n < m for n, m in zip(shape, MIN_SHAPE)):
        raise ImageError(f"phantom shape {shape} (z, y, x) is too small or not 3D",
                         f"use at least {MIN_SHAPE}, e.g. the default {default_shape}")
    if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise ImageError(f"phantom spacing {spacing} (x, y, z mm) must be three positive numbers")
    return shape, spacing


def build_phantom(seed: int, shape: tuple[int, int, int] | None = None,
                  spacing: tuple[float, float, float] | None = None, first_host: str | None = None) -> Phantom:
    """The phantom for ``seed`` as arrays plus where its lesions and mimics are (same seed, same phantom).

    ``shape`` is (z, y, x) in numpy order (default 64 x 80 x 96); ``spacing`` is (x, y, z) mm in SimpleITK
    order (default 1.5 x 1.5 x 2.5). Anatomy scales with the volume; lesion radii are in voxels.
    ``first_host`` (one of :data:`LESION_HOSTS`) places the first lesion there when it fits.
    """
    shape, spacing = _check_geometry(shape, spacing)
    rng = np.random.default_rng(int(seed))
    grid = _Grid.make(shape, np.asarray(spacing[::-1], dtype=float))
    b = _Builder(rng=rng, grid=grid, spacing_xyz=spacing, label=np.zeros(shape, dtype=np.uint8),
                 mean_hu=np.full(shape, _AIR_HU, dtype=np.float32),
                 wobble_field=_SmoothField(rng, 0.6 * float(grid.half.max())))
    _body(b)
    _spine_and_muscles(b)
    _organs(b)
    _vessels(b)
    _bowel(b)
    _cyst_mimics(b)
    hosts, lesion_hu = _lesions(b, first_host)
    if not hosts:  # cannot happen for shapes >= MIN_SHAPE; guard the ">= 1 lesion" promise anyway
        raise ImageError(f"phantom seed {seed} with shape {shape} has no room for a lesion; use a larger shape")
    # Later structures (vessels, lesions) may cover part of a mimic: keep the voxels still painted as fluid.
    fluid = (b.mean_hu >= LESION_HU_RANGE[0]) & (b.mean_hu <= LESION_HU_RANGE[1])
    fluid &= b.label != PHANTOM_SCHEMA.target_value
    mimics = {kind: mask & fluid for kind, mask in b.mimics.items()}
    origin = tuple(float(-(n - 1) / 2.0 * s) for n, s in zip(shape[::-1], spacing))
    return Phantom(image=_intensities(b), label=b.label, spacing=spacing, origin=origin, lesion_hosts=hosts,
                   lesion_hu=lesion_hu, host_hu=dict(b.host_hu), mimics=mimics)


def make_phantom(seed: int, shape: tuple[int, int, int] | None = None,
                 spacing: tuple[float, float, float] | None = None) -> tuple[sitk.Image, sitk.Image]:
    """A seeded CT-like abdominal phantom: (image float32 HU, label uint8 with PHANTOM_SCHEMA values).

    ``shape`` is (z, y, x) in numpy order, ``spacing`` (x, y, z) mm in SimpleITK order; both images share
    the grid (identity direction, origin centred on the volume).
    """
    return build_phantom(seed, shape, spacing).to_images()


def case_seed(seed: int, split: str, index: int) -> int:
    """Seed of one dataset case: training and test cases of the same dataset seed never share a seed."""
    split_id = {"train": 0, "test": 1}[split]
    return int(np.random.SeedSequence([int(seed), split_id, int(index)]).generate_state(1)[0])


def _is_phantom_dataset(folder: Path) -> bool:
    try:
        return DATASET_MARKER in json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class PhantomFamily:
    """A kind of phantom the dataset writer can write: its schema, its builder
    (``build(seed, shape, spacing, first_host)`` -> :class:`Phantom`), where its lesions grow (the largest
    host first), the dataset.json channel name ("CT" gives CT normalisation, anything else z-score), and the
    geometry it is built with when none is given (``shape`` (z, y, x), ``spacing`` (x, y, z) mm)."""

    name: str
    schema: LabelSchema
    build: Callable[..., Phantom]
    lesion_hosts: tuple[str, ...]
    channel: str
    description: str
    shape: tuple[int, int, int] = DEFAULT_SHAPE
    spacing: tuple[float, float, float] = DEFAULT_SPACING


CT_FAMILY = PhantomFamily("ct", PHANTOM_SCHEMA, build_phantom, LESION_HOSTS, "CT",
                          "BackSplit synthetic abdominal CT phantoms (BackSplitLib.phantom)")


def write_phantom_dataset(out: str | Path, cases: int = 20, test_cases: int = 5, seed: int = 0,
                          shape: tuple[int, int, int] | None = None,
                          spacing: tuple[float, float, float] | None = None, progress=None,
                          family: PhantomFamily = CT_FAMILY) -> Path:
    """Write a phantom dataset folder (nnU-Net v2 layout) of ``family`` and return it.

    Training cases go to imagesTr/labelsTr, test cases (other seeds, names continuing the numbering) to
    imagesTs/labelsTs; test case j has its first lesion in the family's host j (cycling), so a test set
    with at least as many cases as hosts holds a lesion in every host. The folder is built beside ``out``
    and renamed into place, so an interrupted run leaves nothing half-written; an existing phantom
    dataset is replaced, any other non-empty folder is refused. ``progress(done, total)`` is called after
    each case when given.
    """
    out = Path(out)
    if cases < 1 or test_cases < 0:
        raise DatasetError(f"a phantom dataset needs at least 1 training case and >= 0 test cases "
                           f"(got {cases} and {test_cases})")
    shape, spacing = _check_geometry(shape, spacing, family.shape, family.spacing)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _is_phantom_dataset(out))):
        raise DatasetError(f"{out} exists and is not an empty folder or a phantom dataset; refusing to overwrite it",
                           "choose a new output folder or remove it first")
    hosts = family.lesion_hosts
    with staged_folder(out) as work:
        width = max(3, len(str(cases + test_cases - 1)))
        jobs = [("train", i, i) for i in range(cases)] + [("test", j, cases + j) for j in range(test_cases)]
        for done, (split, index, number) in enumerate(jobs, start=1):
            name = f"phantom_{number:0{width}d}"
            first_host = hosts[index % len(hosts)] if split == "test" else None
            image, label = family.build(case_seed(seed, split, index), shape, spacing, first_host).to_images()
            images, labels = ("imagesTr", "labelsTr") if split == "train" else ("imagesTs", "labelsTs")
            write_image(image, work / images / f"{name}_0000.nii.gz")
            write_image(label, work / labels / f"{name}.nii.gz")
            if progress is not None:
                progress(done, len(jobs))
        write_dataset_json(
            work, family.schema, num_training=cases, file_ending=".nii.gz", channel_names={"0": family.channel},
            name=out.name, description=family.description,
            **{DATASET_MARKER: {"family": family.name, "seed": int(seed), "shape": list(shape),
                                "spacing": list(spacing), "cases": int(cases), "test_cases": int(test_cases)}},
        )
    return out
