"""The phantom families by name: ``ct`` (:mod:`BackSplitLib.phantom`, cysts in liver and kidneys), ``mr``
(:mod:`BackSplitLib.phantom_mr`, metastases in liver, vertebrae and adrenals), and issue 20's two built to
differ from them: ``liver`` (:mod:`BackSplitLib.phantom_liver`, six classes, faint liver metastases) and
``lung`` (:mod:`BackSplitLib.phantom_lung`, five classes, small nodules among vessels). Torch-free."""

from __future__ import annotations

from BackSplitLib.errors import DatasetError
from BackSplitLib.phantom import CT_FAMILY, PhantomFamily
from BackSplitLib.phantom_liver import LIVER_FAMILY
from BackSplitLib.phantom_lung import LUNG_FAMILY
from BackSplitLib.phantom_mr import MR_FAMILY

FAMILIES: dict[str, PhantomFamily] = {f.name: f for f in (CT_FAMILY, MR_FAMILY, LIVER_FAMILY, LUNG_FAMILY)}


def phantom_family(name: str) -> PhantomFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise DatasetError(f"unknown phantom family '{name}'", f"use one of {', '.join(FAMILIES)}") from None
