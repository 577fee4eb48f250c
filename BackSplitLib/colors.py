"""Display colours: the one table every face colours classes and segments from.

Standard library only, importable on Python 3.9 (the Slicer panel imports it). Three rules:

- a structure Slicer's terminology knows gets its recommended colour (``STRUCTURE_COLORS``: Slicer's "General
  Anatomy" terminology, ``SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.term.json``), matched by the
  words of the name ("Liver", "kidney_left", "renal cyst"); a lesion word wins over an organ word ("liver
  tumor" is a lesion), and a lesion without a terminology colour is ``TARGET_COLOR``;
- other classes of a schema take a fixed palette entry by index, so figures and Slicer agree;
- a new, unnamed segment takes the palette entry farthest from the colours already in use
  (:func:`distinct_color`), so two segments never look alike.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Optional, Tuple

Color = Tuple[int, int, int]

BACKGROUND_COLOR: Color = (0, 0, 0)
IGNORE_COLOR: Color = (128, 128, 128)
TARGET_COLOR: Color = (255, 255, 0)

# A fixed palette so the same class index gets the same colour in every figure and in Slicer.
PALETTE: Tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
)

# Recommended display colours of Slicer's General Anatomy terminology (left/right variants share one), keyed by
# the words of the structure's name; "lung air" is BackSplit's own CT tissue class (no terminology entry).
STRUCTURE_COLORS: dict = {
    "liver": (221, 130, 101), "spleen": (157, 108, 162), "kidney": (185, 102, 83), "lung": (197, 165, 145),
    "heart": (206, 110, 84), "aorta": (224, 97, 76), "pancreas": (249, 180, 111), "stomach": (216, 132, 105),
    "gallbladder": (139, 150, 98), "bladder": (222, 154, 132), "colon": (204, 168, 143),
    "small intestine": (205, 167, 142), "esophagus": (211, 171, 143), "trachea": (182, 228, 255),
    "prostate": (230, 158, 140), "brain": (250, 250, 225), "spinal cord": (244, 214, 49), "rib": (253, 232, 158),
    "bone": (241, 214, 145), "muscle": (192, 104, 88), "skin": (177, 122, 101), "artery": (216, 101, 79),
    "vein": (0, 151, 206), "fat": (230, 220, 70), "body fat": (230, 220, 70),
    "cyst": (205, 205, 100), "mass": (144, 238, 144),
    "lung air": (135, 206, 235), "soft tissue": (192, 104, 88),
}


def _words(name: str) -> list:
    return re.findall(r"[a-z]+", (name or "").lower().replace("_", " "))


def _phrases(words: list) -> list:
    """Two-word phrases first ("small intestine" before "intestine"), then single words."""
    return [" ".join(words[i:i + 2]) for i in range(len(words) - 1)] + list(words)


def structure_color(name: str) -> Optional[Color]:
    """The terminology colour of a structure or lesion named ``name``; None when the name is not known."""
    from BackSplitLib.vocabulary import LESION_WORDS

    phrases = _phrases(_words(name))
    for phrase in phrases:
        if phrase in LESION_WORDS:
            return STRUCTURE_COLORS.get(phrase, TARGET_COLOR)
    for phrase in phrases:
        if phrase in STRUCTURE_COLORS:
            return STRUCTURE_COLORS[phrase]
    return None


def class_color(name: str, index: int) -> Color:
    """A class's colour when none is given: a known structure's terminology colour, else the palette entry of
    its index (``LabelSchema`` gives background and ignore their own)."""
    return structure_color(name) or PALETTE[index % len(PALETTE)]


def _distance(a: Iterable[float], b: Iterable[float]) -> float:
    return math.sqrt(sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)))


def distinct_color(used: Iterable[Color]) -> Color:
    """The palette entry farthest (in RGB) from every colour in ``used``; the first entry when none is used."""
    used = [tuple(c) for c in used]
    if not used:
        return PALETTE[0]
    return max(PALETTE, key=lambda candidate: min(_distance(candidate, u) for u in used))


def new_segment_color(name: str, used: Iterable[Color]) -> Color:
    """A new segment's colour: its structure's terminology colour when the name is known, else a distinct one."""
    return structure_color(name) or distinct_color(used)
