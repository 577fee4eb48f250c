"""What a radiologist reads off a slice view, without Qt: the view's name and position, the patient direction
at each edge of the view (R/L, A/P, S/I), and the image value under the pointer (HU for a CT).

Plain functions over MRML nodes and matrices, so the browser app's overlay and any other face compute the same
words; Slicer's own slice views already show these (orientation marker, Data Probe), so only the browser
binds them today. RAS: +x is the patient's Right, +y Anterior, +z Superior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from BackSplitLib.vocabulary import could_be_hounsfield

# The letter for the patient direction of +axis and -axis, per RAS axis.
_DIRECTION_LETTERS = (("R", "L"), ("A", "P"), ("S", "I"))
# A screen axis gets a second letter when it leans this far towards a second patient axis (oblique views):
# sin(22.5 degrees), halfway between a pure and a diagonal direction.
_SECOND_LETTER_AT = math.sin(math.radians(22.5))
# The position line's axis letter per standard orientation: the axis the slice moves along.
_OFFSET_LETTERS = {"Axial": "S", "Sagittal": "R", "Coronal": "A"}


def direction_letters(vector: Sequence[float]) -> str:
    """The patient direction a RAS vector points to: ``(-1, 0, 0)`` is "L"; an oblique one gets two letters,
    the main direction first ("LA")."""
    size = math.sqrt(sum(float(c) ** 2 for c in vector[:3])) or 1.0
    unit = [float(c) / size for c in vector[:3]]
    order = sorted(range(3), key=lambda axis: -abs(unit[axis]))
    letters = [_DIRECTION_LETTERS[axis][0 if unit[axis] > 0 else 1] for axis in order
               if abs(unit[axis]) >= _SECOND_LETTER_AT][:2]
    return "".join(letters)


def edge_labels(slice_to_ras: Sequence[float]) -> dict[str, str]:
    """The patient direction at each edge of a slice view, from its 4x4 SliceToRAS matrix (16 numbers, row
    by row): the screen's +x points to the right edge, its +y to the top edge."""
    m = [float(v) for v in slice_to_ras]
    x_axis, y_axis = (m[0], m[4], m[8]), (m[1], m[5], m[9])
    minus = lambda v: tuple(-c for c in v)  # noqa: E731
    return {"left": direction_letters(minus(x_axis)), "right": direction_letters(x_axis),
            "top": direction_letters(y_axis), "bottom": direction_letters(minus(y_axis))}


def matrix_values(matrix) -> list[float]:
    """A vtkMatrix4x4's 16 numbers, row by row."""
    return [matrix.GetElement(r, c) for r in range(4) for c in range(4)]


def view_title(slice_node) -> str:
    """A slice view's name and position as Slicer's slice controller says it: "Axial  S 12.5 mm"."""
    orientation = slice_node.GetOrientation() or slice_node.GetName()
    letter = _OFFSET_LETTERS.get(orientation)
    if letter is None:
        return orientation
    m = matrix_values(slice_node.GetSliceToRAS())
    offset = {"R": m[3], "A": m[7], "S": m[11]}[letter]
    return f"{orientation}  {letter} {offset:.1f} mm"


def slice_view_facts(slice_node) -> dict:
    """What the overlay of one slice view shows: its title and its four edge labels."""
    return {"title": view_title(slice_node), **edge_labels(matrix_values(slice_node.GetSliceToRAS()))}


@dataclass(frozen=True)
class Probe:
    """The voxel under the pointer: its index (i, j, k), its value, and whether the volume may be in HU."""

    ijk: tuple
    value: float
    hounsfield: bool

    @property
    def text(self) -> str:
        i, j, k = self.ijk
        value = f"{self.value:.0f} HU" if self.hounsfield else f"{self.value:.4g}"
        return f"{value} at voxel ({i}, {j}, {k})"


def probe(volume_node, ras: Sequence[float]) -> Optional[Probe]:
    """The voxel of ``volume_node`` at the RAS point ``ras`` (nearest voxel centre); None outside the volume
    or without image data. The volume is said in HU when it could be a CT (``could_be_hounsfield``)."""
    import vtk

    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None:
        return None
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume_node.GetRASToIJKMatrix(ras_to_ijk)
    point = ras_to_ijk.MultiplyPoint((float(ras[0]), float(ras[1]), float(ras[2]), 1.0))
    ijk = tuple(int(math.floor(c + 0.5)) for c in point[:3])
    dims = image.GetDimensions()
    if not all(0 <= c < n for c, n in zip(ijk, dims)):
        return None
    value = image.GetScalarComponentAsDouble(*ijk, 0)
    return Probe(ijk, value, could_be_hounsfield(image.GetScalarRange()[0]))
