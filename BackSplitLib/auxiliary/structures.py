"""Which structures of a map become auxiliary classes: names, groups ("abdominal organs"), globs, merges.

Standard library only: the Slicer module resolves the user's request with it before any image is read.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from BackSplitLib.errors import LabelError


@dataclass(frozen=True)
class StructureGroup:
    """Named set of structures (glob patterns over map names); ``merge_as`` makes them one class."""

    patterns: tuple[str, ...]
    merge_as: str | None = None
    description: str = ""


STRUCTURE_GROUPS: dict[str, StructureGroup] = {
    "abdominal_organs": StructureGroup(
        ("liver", "spleen", "kidney", "kidneys", "kidney_left", "kidney_right", "pancreas", "gallbladder",
         "stomach", "adrenal_gland*", "duodenum", "small_bowel", "colon", "urinary_bladder"),
        None, "liver, spleen, kidneys, pancreas, gallbladder, stomach, adrenals, bowel, bladder"),
    "kidneys": StructureGroup(("kidney", "kidneys", "kidney_left", "kidney_right"), None, "both kidneys"),
    "bowel": StructureGroup(("duodenum", "small_bowel", "colon"), None, "duodenum, small bowel, colon"),
    "lungs": StructureGroup(("lung", "lungs", "lung_left", "lung_right", "lung_*_lobe_*"), "lung",
                            "all lung lobes as one class 'lung'"),
    "bones": StructureGroup(("bone", "bones", "vertebrae*", "rib_*", "sacrum", "hip_*", "femur*", "humerus*",
                             "scapula*", "clavicula*", "sternum", "skull", "costal_cartilages"), "bone",
                            "the skeleton as one class 'bone'"),
    "vessels": StructureGroup(("aorta", "inferior_vena_cava", "superior_vena_cava", "portal_vein*",
                               "iliac_artery_*", "iliac_vena_*", "pulmonary_artery", "pulmonary_vein",
                               "brachiocephalic_*", "subclavian_artery_*", "common_carotid_artery_*"), "vessels",
                              "large vessels as one class 'vessels'"),
    "muscles": StructureGroup(("gluteus_*", "iliopsoas_*", "autochthon_*", "skeletal_muscle"), "muscle",
                              "large muscles as one class 'muscle'"),
    "heart": StructureGroup(("heart", "heart_*", "atrial_appendage_*"), "heart", "the heart as one class"),
}


def _norm(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _group_for(token: str) -> StructureGroup | None:
    key = _norm(token)
    for candidate in (key, key + "s", key.rstrip("s")):
        if candidate in STRUCTURE_GROUPS:
            return STRUCTURE_GROUPS[candidate]
    return None


def select_structures(available: Iterable[str], request: str | Sequence[str], source: str = "the map"
                      ) -> list[tuple[str, list[str]]]:
    """Resolve a structure request into output classes: ``[(class name, [map structures])]``.

    Tokens (comma-separated): a structure name (case-insensitive), a group from ``STRUCTURE_GROUPS``
    ("abdominal organs"), a glob (``vertebrae_*``), or ``new=a+b`` to merge structures into one class.
    Unknown names raise a LabelError that lists close matches.
    """
    available = list(available)
    by_norm = {_norm(n): n for n in available}
    tokens = [t.strip() for t in (request.split(",") if isinstance(request, str) else request) if t.strip()]
    if not tokens:
        raise LabelError("no structures requested", "pass --structures a,b,c (names or groups)")
    result: list[tuple[str, list[str]]] = []
    unknown: list[str] = []

    def matches(pattern: str) -> list[str]:
        pattern = _norm(pattern)
        if any(c in pattern for c in "*?["):
            return [n for k, n in by_norm.items() if fnmatch.fnmatchcase(k, pattern)]
        return [by_norm[pattern]] if pattern in by_norm else []

    for token in tokens:
        if "=" in token:
            new_name, parts = token.split("=", 1)
            members = []
            for part in parts.split("+"):
                found = matches(part)
                if not found:
                    unknown.append(part.strip())
                members += found
            if members:
                result.append((new_name.strip(), list(dict.fromkeys(members))))
            continue
        found = matches(token)
        if found:
            result += [(n, [n]) for n in found]
            continue
        group = _group_for(token)
        if group is not None:
            members = list(dict.fromkeys(m for p in group.patterns for m in matches(p)))
            if not members:
                raise LabelError(f"group '{token}' matches no structure in {source}",
                                 f"it looks for {', '.join(group.patterns)}")
            if group.merge_as:
                result.append((group.merge_as, members))
            else:
                result += [(n, [n]) for n in members]
            continue
        unknown.append(token)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(_norm(name), list(by_norm), n=3, cutoff=0.6)
            if close:
                hints.append(f"'{name}': did you mean {', '.join(by_norm[c] for c in close)}?")
        shown = ", ".join(sorted(available)[:25]) + (f" and {len(available) - 25} more" if len(available) > 25 else "")
        raise LabelError(
            f"unknown structure{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)} in {source}"
            + (f" ({' '.join(hints)})" if hints else ""),
            f"known: {shown}; groups: {', '.join(STRUCTURE_GROUPS)}",
        )
    names = [name for name, _ in result]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise LabelError(f"structures {duplicated} are requested twice", "list each structure once")
    return result
