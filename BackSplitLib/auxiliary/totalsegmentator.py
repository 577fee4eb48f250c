"""The TotalSegmentator bridge: find an installed TotalSegmentator and its weights (never download), run it
in a child process on the requested structures and import its output as an organ map.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import SimpleITK as sitk

from BackSplitLib.auxiliary.labels import AuxiliaryError, AuxiliaryLabels
from BackSplitLib.auxiliary.organ_maps import Segment, import_organ_map, read_organ_map, totalsegmentator_class_map
from BackSplitLib.auxiliary.structures import select_structures
from BackSplitLib.io import read_image


TOTALSEG_INSTALL_HINT = (
    "install it into this Python with 'pip install TotalSegmentator' (it needs PyTorch) and get the weights "
    "once, with internet, by 'totalseg_download_weights -t total' (add '-t total_fast' for --fast); "
    "BackSplit never downloads at run time. Or run TotalSegmentator elsewhere and use --import SEG --names auto"
)
# nnU-Net dataset ids of the "total" task: five 1.5 mm parts, the 3 mm fast model, and the 6 mm model
# TotalSegmentator uses to crop around a --roi_subset.
TOTALSEG_WEIGHTS = {"default": (291, 292, 293, 294, 295, 298), "fast": (297, 298)}


def totalsegmentator_package_dir() -> Path | None:
    """The installed package folder, found without importing it (find_spec of a top-level package)."""
    spec = importlib.util.find_spec("totalsegmentator")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def totalsegmentator_weights_dir() -> Path:
    """Where TotalSegmentator keeps weights (its own rule: TOTALSEG_WEIGHTS_PATH, TOTALSEG_HOME_DIR, ~)."""
    if "TOTALSEG_WEIGHTS_PATH" in os.environ:
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    if "TOTALSEG_HOME_DIR" in os.environ:
        return Path(os.environ["TOTALSEG_HOME_DIR"]) / "nnunet" / "results"
    home = Path("/tmp") if str(Path.home()) == "/" else Path.home()
    return home / ".totalsegmentator" / "nnunet" / "results"


def totalsegmentator_missing_weights(fast: bool = False) -> list[int]:
    weights = totalsegmentator_weights_dir()
    present = {p.name.split("_")[0] for p in weights.glob("Dataset*_*")} if weights.is_dir() else set()
    return [i for i in TOTALSEG_WEIGHTS["fast" if fast else "default"] if f"Dataset{i}" not in present]


def totalsegmentator_status(fast: bool = False) -> tuple[bool, str]:
    """(usable, message) for the Slicer panel: is TotalSegmentator installed with its weights?"""
    package = totalsegmentator_package_dir()
    if package is None:
        return False, f"TotalSegmentator is not installed: {TOTALSEG_INSTALL_HINT}"
    missing = totalsegmentator_missing_weights(fast)
    if missing:
        return False, (f"TotalSegmentator is installed but its weights are missing in {totalsegmentator_weights_dir()} "
                       f"(Dataset{', Dataset'.join(map(str, missing))}): run 'totalseg_download_weights -t "
                       f"{'total_fast' if fast else 'total'}' once with internet, or set TOTALSEG_WEIGHTS_PATH")
    return True, f"TotalSegmentator at {package}"


def run_totalsegmentator(image_path: str | Path, structures: str | Sequence[str], image: sitk.Image | None = None,
                         fast: bool = False, device: str = "gpu", work_dir: str | Path | None = None,
                         timeout_s: float | None = None) -> AuxiliaryLabels:
    """Segment ``structures`` with an installed TotalSegmentator (in a child process) and import them.

    Raises AuxiliaryError naming exactly what to install when the package or its weights are missing.
    """
    image_path = Path(image_path)
    image = image if image is not None else read_image(image_path)
    package = totalsegmentator_package_dir()
    if package is None:
        raise AuxiliaryError("TotalSegmentator is not installed", TOTALSEG_INSTALL_HINT)
    table = totalsegmentator_class_map(package / "map_to_binary.py", "total")
    names = {name: Segment(0, value) for value, name in table.items()}
    selection = select_structures(names, structures, "TotalSegmentator's 'total' task")
    usable, message = totalsegmentator_status(fast)
    if not usable:
        raise AuxiliaryError(message)
    rois = list(dict.fromkeys(m for _, members in selection for m in members))
    with tempfile.TemporaryDirectory(prefix="backsplit-totalseg-", dir=work_dir) as tmp:
        out = Path(tmp) / "segmentation.nii.gz"
        command = [sys.executable, "-m", "totalsegmentator.bin.TotalSegmentator", "-i", str(image_path),
                   "-o", str(out), "--ml", "--roi_subset", *rois, "--device", device]
        if fast:
            command.append("--fast")
        try:
            done = subprocess.run(command, capture_output=True, encoding="utf-8", errors="replace",
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AuxiliaryError(f"TotalSegmentator did not finish within {timeout_s:g} s on {image_path}") from None
        if done.returncode != 0 or not out.is_file():
            last = (done.stderr or done.stdout or "").strip().splitlines()[-1:] or ["no output"]
            raise AuxiliaryError(f"TotalSegmentator failed on {image_path} (exit {done.returncode}): {last[0][:200]}",
                                 "rerun it by hand to see the full log: " + " ".join(command[2:]))
        organ_map = read_organ_map(out, {n: s.value for n, s in names.items()})
        tokens = [f"{name}={'+'.join(members)}" for name, members in selection]
        return import_organ_map(image, organ_map, tokens)
