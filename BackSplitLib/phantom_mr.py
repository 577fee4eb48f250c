"""The second phantom family: MR-like (fat-suppressed T2-weighted) upper abdomen with metastases.

It differs from :mod:`BackSplitLib.phantom` (CT, cysts in liver and kidneys) on purpose, so that a recipe
tuned on one family is tested on data it was not tuned on:

- **modality**: arbitrary MR units (a random scanner gain per case), a strong smooth multiplicative bias
  field (coil sensitivity, +-15-30 %), Rician noise, z-score normalisation (dataset channel ``T2``);
- **target**: ``metastasis``, *brighter* than its host (about 1.5-1.9x liver), where the CT family's
  cysts are darker;
- **lesion hosts**: the liver, the vertebral bodies (bone metastases) and the adrenal glands, a host a
  few voxels thick (:data:`LESION_HOSTS`);
- **mimics** with the metastases' intensity (only context separates them), each carrying the label an
  automatic organ map would give it, with TotalSegmentator v2's ``total`` class list as the reference
  (its names are used; left and right parts of ``autochthon`` and the lumbar ``vertebrae_*`` are merged):

  - spleen parenchyma (T2-bright like the metastases): ``spleen`` (a ``total`` class);
  - renal cortex: ``kidney_left`` / ``kidney_right`` (``total``);
  - sludge layering in the gallbladder: ``gallbladder`` (``total``; the gallbladder's bile is brighter);
  - food and fluid in the stomach: ``stomach`` (``total``);
  - retroperitoneal lymph nodes: background (``total`` has no lymph-node class);
  - a bright focus (cyst / haemangioma-like, brighter than the metastases) inside the liver:
    ``liver`` (the ``total`` liver mask covers focal liver lesions). No mimic is given a class that would be
    the target itself: ``total`` has no metastasis class, and its tumour-like classes are not used.

Torch-free; the geometry helpers are the CT family's.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from BackSplitLib.errors import ImageError
from BackSplitLib.phantom import (
    Phantom, PhantomFamily, _Builder, _check_geometry, _ellipsoid, _fraction, _Grid,
    _place_blob, _random_rotation, _rotation_inplane, _SmoothField, place_lesions,
)
from BackSplitLib.schema import LabelSchema

AUXILIARY_CLASSES = (
    "liver", "spleen", "kidney_left", "kidney_right", "stomach", "gallbladder", "adrenal_gland_left",
    "adrenal_gland_right", "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "vertebrae",
    "autochthon",
)
_COLORS = {
    "liver": (221, 130, 101), "spleen": (157, 108, 162), "kidney_left": (185, 102, 83),
    "kidney_right": (185, 122, 83), "stomach": (216, 132, 105), "gallbladder": (139, 150, 98),
    "adrenal_gland_left": (244, 217, 154), "adrenal_gland_right": (244, 207, 154), "aorta": (216, 101, 79),
    "inferior_vena_cava": (0, 151, 206), "portal_vein_and_splenic_vein": (0, 112, 165),
    "vertebrae": (241, 214, 145), "autochthon": (192, 104, 88), "metastasis": (255, 60, 60),
}
MR_SCHEMA: LabelSchema = LabelSchema.from_names(target="metastasis", auxiliary=AUXILIARY_CLASSES, colors=_COLORS)

LESION_HOSTS = ("liver", "vertebrae", "adrenal_gland_right", "adrenal_gland_left")
_HOST_WEIGHTS = (0.55, 0.25, 0.1, 0.1)
LESION_RATIO = (1.5, 1.9)  # metastasis intensity / liver intensity; the mimics are drawn from the same range
LESION_RADIUS_VOXELS = (1.5, 6.0)
MIMIC_KINDS = ("spleen", "renal_cortex", "gallbladder_sludge", "stomach_contents", "lymph_node", "liver_bright_focus")
_AIR = 0.01


def _lesion_si(b: _Builder) -> float:
    return float(b.rng.uniform(*LESION_RATIO))


def _body(b: _Builder) -> None:
    """Body outline: fat-suppressed subcutaneous and visceral fat (dark), the muscular wall (background)."""
    z, y, x = b.grid.axes()
    hz, hy, hx = b.grid.half
    ax = hx * b.rng.uniform(0.84, 0.95) * (1 + 0.03 * np.sin(z / hz * np.pi + b.rng.uniform(0, 6.3)))
    ay = hy * b.rng.uniform(0.72, 0.82)
    radial = np.sqrt((x / ax) ** 2 + ((y - hy * 0.06) / ay) ** 2)
    fat = float(b.rng.uniform(0.25, 0.4))
    b.host_hu.update(fat=fat, muscle=float(b.rng.uniform(0.45, 0.6)))
    b.paint(radial <= 1.0, "background", fat)
    b.paint(radial <= 0.9, "background", b.host_hu["muscle"])
    b.interior = radial <= 0.84
    b.paint(b.interior, "background", fat * float(b.rng.uniform(0.9, 1.1)))


def _spine(b: _Builder) -> None:
    """Vertebral bodies with discs, posterior elements, the CSF-filled canal, the autochthon muscles."""
    g, rng = b.grid, b.rng
    z, _, _ = g.axes()
    for side in (-1, 1):
        b.paint(_ellipsoid(g, _fraction(g, (0, 0.62, 0.17 * side)), _fraction(g, (4.0, 0.15, 0.13))),
                "autochthon", b.host_hu["muscle"])
    centre = _fraction(g, (0, 0.36 + rng.uniform(-0.02, 0.02), 0))
    body = _ellipsoid(g, centre, _fraction(g, (4.0, 0.14, 0.12)))
    marrow = float(rng.uniform(0.55, 0.8))  # fat-suppressed marrow: darker than liver
    b.host_hu["vertebrae"] = marrow
    b.paint(body, "vertebrae", marrow)
    period = rng.uniform(24, 32)
    disc = np.broadcast_to(((z - rng.uniform(0, period)) % period) < 6.0, body.shape)
    b.paint(body & disc, "background", float(rng.uniform(1.0, 1.3)))  # intervertebral discs: no total class
    b.paint(_ellipsoid(g, _fraction(g, (0, 0.6, 0)), _fraction(g, (4.0, 0.12, 0.045))), "vertebrae", marrow)
    canal = _ellipsoid(g, _fraction(g, (0, 0.5, 0)), _fraction(g, (4.0, 0.05, 0.04)))
    b.paint(canal, "background", float(rng.uniform(2.8, 3.4)))  # CSF


def _organ(b: _Builder, name: str, centre_frac, semi_frac, angle_deg: float, si: float,
           wobble: float = 0.08) -> np.ndarray:
    rot = _rotation_inplane(np.deg2rad(angle_deg + b.rng.normal(0, 8)), np.deg2rad(b.rng.normal(0, 5)))
    semi = _fraction(b.grid, semi_frac) * b.rng.uniform(0.9, 1.1, size=3)
    mask = _ellipsoid(b.grid, b.jitter(centre_frac), semi, rot, b.wobble_field, wobble) & b.interior
    b.host_hu[name] = si
    b.paint(mask, name, si)
    return mask


def _organs(b: _Builder) -> None:
    """Liver (1.0 by definition), T2-bright spleen, kidneys with a bright cortex, stomach, gallbladder with
    sludge, the adrenal glands above the kidneys, vessels as flow voids."""
    rng, g = b.rng, b.grid
    liver = _organ(b, "liver", (0.3, -0.08, -0.42), (0.7, 0.55, 0.42), -20, 1.0)
    spleen = _organ(b, "spleen", (0.45, 0.28, 0.55), (0.35, 0.28, 0.16), 35, _lesion_si(b))
    b.add_mimic("spleen", spleen)
    for name, side in (("kidney_left", 1), ("kidney_right", -1)):
        rot = _rotation_inplane(np.deg2rad(25 * side + rng.normal(0, 6)), np.deg2rad(rng.normal(0, 5)))
        centre = b.jitter((-0.35, 0.4, 0.43 * side), 0.03)
        semi = _fraction(g, (0.38, 0.22, 0.15)) * rng.uniform(0.9, 1.1, size=3)
        kidney = _ellipsoid(g, centre, semi, rot, b.wobble_field, 0.05) & b.interior
        medulla = _ellipsoid(g, centre, semi * 0.5, rot) & kidney
        b.host_hu[name] = float(rng.uniform(1.1, 1.3))
        b.paint(kidney, name, _lesion_si(b))
        b.paint(medulla, name, b.host_hu[name])
        b.add_mimic("renal_cortex", kidney & ~medulla)
        # Adrenal gland: a thin cap above and medial to the kidney; a lesion host.
        adrenal = _ellipsoid(g, b.jitter((0.22, 0.3, 0.3 * side), 0.02), _fraction(g, (0.22, 0.13, 0.11)),
                             _rotation_inplane(np.deg2rad(rng.normal(0, 15))), b.wobble_field, 0.05) & b.interior
        adrenal_name = f"adrenal_gland_{'left' if side == 1 else 'right'}"
        b.host_hu[adrenal_name] = float(rng.uniform(0.8, 1.0))
        b.paint(adrenal & ~kidney, adrenal_name, b.host_hu[adrenal_name])
    stomach = _organ(b, "stomach", (0.55, -0.3, 0.3), (0.3, 0.22, 0.22), 10, float(rng.uniform(0.7, 0.9)))
    contents = _ellipsoid(g, g.to_mm(np.argwhere(stomach).mean(axis=0)) if stomach.any() else np.zeros(3),
                          _fraction(g, (0.22, 0.15, 0.15)), _random_rotation(rng)) & stomach
    b.paint(contents, None, _lesion_si(b))
    b.add_mimic("stomach_contents", contents)
    gallbladder = _organ(b, "gallbladder", (-0.2, -0.38, -0.18), (0.22, 0.13, 0.1), -30, float(rng.uniform(2.8, 3.4)),
                         wobble=0.05)
    _, y, _ = g.axes()
    if gallbladder.any():  # sludge layers posteriorly (larger y in LPS) in a supine patient
        level = np.quantile(np.argwhere(gallbladder)[:, 1], rng.uniform(0.55, 0.75))
        sludge = gallbladder & (np.broadcast_to(y, gallbladder.shape) > g.to_mm(np.array([0, level, 0]))[1])
        b.paint(sludge, None, _lesion_si(b))
        b.add_mimic("gallbladder_sludge", sludge)
    radius = 0.065 * g.half[2] * rng.uniform(0.9, 1.1)
    in_plane = np.array([0, 1, 1])
    long_axis = 4 * g.half[0]
    b.paint(_ellipsoid(g, b.jitter((0, 0.16, 0.07), 0.02) * in_plane, np.array([long_axis, radius, radius])),
            "aorta", 0.08)
    b.paint(_ellipsoid(g, b.jitter((0, 0.12, -0.17), 0.02) * in_plane,
                       np.array([long_axis, 0.9 * radius, 1.3 * radius])), "inferior_vena_cava", 0.1)
    portal = _ellipsoid(g, b.jitter((0.1, 0.0, -0.25), 0.03), _fraction(g, (0.12, 0.05, 0.28)),
                        _rotation_inplane(np.deg2rad(rng.normal(10, 10))))
    b.paint(portal & (liver | b.interior), "portal_vein_and_splenic_vein", 0.12)


def _lymph_nodes_and_foci(b: _Builder) -> None:
    """Retroperitoneal lymph nodes beside the vessels (background) and a bright focus in the liver (liver)."""
    background = (b.label == 0) & b.interior
    near_vessels = np.zeros_like(background)
    z, y, x = b.grid.axes()
    centre = _fraction(b.grid, (0, 0.15, 0))
    near_vessels |= np.broadcast_to((np.abs(x - centre[2]) < 0.35 * b.grid.half[2])
                                    & (np.abs(y - centre[1]) < 0.25 * b.grid.half[1]), background.shape)
    for _ in range(int(b.rng.integers(1, 4))):
        blob = _place_blob(b, background & near_vessels, (1.5, 3.5))
        if blob is not None:
            b.paint(blob, "background", _lesion_si(b))
            b.add_mimic("lymph_node", blob)
    if b.rng.random() < 0.7:
        blob = _place_blob(b, b.label == MR_SCHEMA.labels["liver"], (1.5, 4.0))
        if blob is not None:
            b.paint(blob, "liver", float(b.rng.uniform(2.4, 3.0)))
            b.add_mimic("liver_bright_focus", blob)


def _metastases(b: _Builder, first_host: str | None) -> tuple[list[str], list[float]]:
    """1-4 metastases in liver, vertebrae and adrenals; at least one is always placed."""
    return place_lesions(b, LESION_HOSTS, _HOST_WEIGHTS, LESION_RADIUS_VOXELS, lambda: _lesion_si(b), first_host)


def _intensities(b: _Builder) -> np.ndarray:
    """MR magnitude image: texture, blur, coil bias field, Rician noise, scanner gain."""
    rng, g = b.rng, b.grid
    z, y, x = g.axes()
    signal = b.mean_hu * (1.0 + 0.04 * _SmoothField(rng, 12.0)(z, y, x))
    image = sitk.GetImageFromArray(signal.astype(np.float32))
    image.SetSpacing(b.spacing_xyz)
    sigma_xyz = [0.45 * b.spacing_xyz[0], 0.45 * b.spacing_xyz[1], 0.4 * b.spacing_xyz[2]]
    signal = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma_xyz))
    bias = 1.0 + rng.uniform(0.15, 0.3) * _SmoothField(rng, 3.0 * float(g.half.max()), terms=3)(z, y, x)
    signal = signal * np.clip(bias, 0.4, 1.8)
    sigma = rng.uniform(0.03, 0.06)
    real = signal + rng.normal(0.0, sigma, size=signal.shape)
    imaginary = rng.normal(0.0, sigma, size=signal.shape)
    magnitude = np.sqrt(real ** 2 + imaginary ** 2)
    return (magnitude * rng.uniform(300, 900)).astype(np.float32)


def build_mr_phantom(seed: int, shape: tuple[int, int, int] | None = None,
                     spacing: tuple[float, float, float] | None = None, first_host: str | None = None) -> Phantom:
    """The MR-like phantom for ``seed`` (same conventions as :func:`phantom.build_phantom`; ``lesion_hu``
    and ``host_hu`` hold intensities relative to the liver before gain, bias and noise)."""
    shape, spacing = _check_geometry(shape, spacing)
    rng = np.random.default_rng([int(seed), 2])  # never the CT family's stream for the same seed
    grid = _Grid.make(shape, np.asarray(spacing[::-1], dtype=float))
    b = _Builder(rng=rng, grid=grid, spacing_xyz=spacing, label=np.zeros(shape, dtype=np.uint8),
                 mean_hu=np.full(shape, _AIR, dtype=np.float32),
                 wobble_field=_SmoothField(rng, 0.6 * float(grid.half.max())), schema=MR_SCHEMA)
    _body(b)
    _spine(b)
    _organs(b)
    _lymph_nodes_and_foci(b)
    hosts, values = _metastases(b, first_host)
    if not hosts:
        raise ImageError(f"MR phantom seed {seed} with shape {shape} has no room for a lesion; use a larger shape")
    mimics = b.surviving_mimics()
    origin = tuple(float(-(n - 1) / 2.0 * s) for n, s in zip(shape[::-1], spacing))
    return Phantom(image=_intensities(b), label=b.label, spacing=spacing, origin=origin, lesion_hosts=hosts,
                   lesion_hu=values, host_hu=dict(b.host_hu), mimics=mimics)


MR_FAMILY = PhantomFamily("mr", MR_SCHEMA, build_mr_phantom, LESION_HOSTS, "T2",
                          "BackSplit synthetic T2-weighted MR phantoms with metastases (BackSplitLib.phantom_mr)")
