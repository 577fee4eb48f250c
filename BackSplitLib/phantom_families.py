"""The phantom families by name: ``ct`` (:mod:`BackSplitLib.phantom`, cysts in liver and kidneys) and
``mr`` (:mod:`BackSplitLib.phantom_mr`, metastases in liver, vertebrae and adrenals). Torch-free."""

from __future__ import annotations

from BackSplitLib.errors import DatasetError
from BackSplitLib.phantom import CT_FAMILY, PhantomFamily
from BackSplitLib.phantom_mr import MR_FAMILY

FAMILIES: dict[str, PhantomFamily] = {f.name: f for f in (CT_FAMILY, MR_FAMILY)}


def phantom_family(name: str) -> PhantomFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise DatasetError(f"unknown phantom family '{name}'", f"use one of {', '.join(FAMILIES)}") from None
