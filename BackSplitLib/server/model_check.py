"""An uploaded run folder is proven usable before it is stored: its preprocessing bounded, its network sized
on the meta device, loaded, run once.

Garbage weights registered with ``promote=true`` made every default ``/predict`` fail; a 3 KB zip that
declared 2048/4096 channels cost 4.8 GiB at the first prediction. So the network its model.json describes
is first built on ``torch.device("meta")`` (no memory) and its parameter count bounded; then it is built
for real, its weights loaded, and run once on a small CPU cube. Before that, its preprocessing is bounded:
spacing [0.01, 0.01, 0.01] passed once and made /predict try to allocate 85 TB (issue 19), so the spacing must
be in the engine's physical range, the patch sides at most the engine's largest, and a typical volume
(``TYPICAL_EXTENT_MM`` on each side) resampled to the spacing at most ``MAX_RESAMPLED_VOXELS``. /predict then
bounds the resampled size of the actual image (``check_resampled_size``). Any failure is the client's: 422.
"""

from __future__ import annotations

import math

from BackSplitLib.errors import BackSplitError
from BackSplitLib.image_files import ImageTooLarge, format_bytes
from BackSplitLib.image_geometry import SPACING_RANGE_MM, resampled_voxels
from BackSplitLib.run_folder import RunInfo

MAX_MODEL_PARAMETERS = 200_000_000  # ~800 MB of float32 weights; nnU-Net-sized 3D networks have ~30 M
TYPICAL_EXTENT_MM = 300.0  # a typical CT volume's side (an abdomen's field of view)
MAX_RESAMPLED_VOXELS = 1 << 30  # 4 GiB as float32: a 300 mm cube at 0.3 mm spacing
FLOAT_BYTES = 4  # the network's input and output are float32


class ModelCheckError(BackSplitError):
    """The uploaded model cannot be used (the server answers 422)."""


def check_model_preprocessing(preprocessing: dict) -> None:
    """ModelCheckError unless spacing, patch size and a typical volume's resampled size are in bounds."""
    from BackSplitLib.networks import MAX_PATCH_SIDE

    spacing, patch = preprocessing.get("spacing"), preprocessing.get("patch_size")
    if not _numbers(spacing, 3) or not all(SPACING_RANGE_MM[0] <= s <= SPACING_RANGE_MM[1] for s in spacing):
        raise ModelCheckError(f"the model's preprocessing spacing must be 3 numbers from {SPACING_RANGE_MM[0]:g} to "
                              f"{SPACING_RANGE_MM[1]:g} mm")
    if not _numbers(patch, 3) or not all(float(p).is_integer() and 1 <= p <= MAX_PATCH_SIDE for p in patch):
        raise ModelCheckError(f"the model's preprocessing patch_size must be 3 whole numbers from 1 to {MAX_PATCH_SIDE}")
    voxels = resampled_voxels([1, 1, 1], [TYPICAL_EXTENT_MM] * 3, spacing)
    if voxels > MAX_RESAMPLED_VOXELS:
        side = "x".join(str(round(TYPICAL_EXTENT_MM / s)) for s in spacing)
        raise ModelCheckError(f"the model's spacing {spacing} mm would resample a typical {TYPICAL_EXTENT_MM:g} mm "
                              f"volume to {side} voxels ({format_bytes(voxels * FLOAT_BYTES)}), more than "
                              f"{format_bytes(MAX_RESAMPLED_VOXELS * FLOAT_BYTES)}", "train at a coarser spacing")


def check_resampled_size(size, spacing, target_spacing, max_bytes: int, what: str) -> None:
    """ImageTooLarge (the server answers 413) when ``what`` resampled to the model's spacing would hold more
    than ``max_bytes`` of float32 voxels (``--max-image-size``)."""
    nbytes = resampled_voxels(size, spacing, target_spacing) * FLOAT_BYTES
    if nbytes > max_bytes:
        raise ImageTooLarge(f"{what} resampled to the model's spacing {list(target_spacing)} mm would hold "
                            f"{format_bytes(nbytes)} of voxels, more than this server's limit of "
                            f"{format_bytes(max_bytes)}", "crop the volume, or use a model trained at a coarser spacing")


def _numbers(values, count: int) -> bool:
    return (isinstance(values, list) and len(values) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values))


def check_uploaded_model(info: RunInfo, max_parameters: int = MAX_MODEL_PARAMETERS) -> int:
    """Bound the preprocessing, then build, size, load and run the run's network once; returns its
    parameter count."""
    import torch

    check_model_preprocessing(info.preprocessing)
    from BackSplitLib.networks import build_network, patch_divisors
    from BackSplitLib.runs import load_weights

    def build():
        return build_network(info.arch, in_channels=1, num_classes=info.schema.num_classes, **info.arch_params)

    try:
        with torch.device("meta"):
            count = sum(p.numel() for p in build().parameters())
    except BackSplitError as e:
        raise ModelCheckError(f"the model's network cannot be built: {e.message}", e.hint) from None
    except Exception as e:  # noqa: BLE001 - any parameter MONAI rejects is the upload's fault
        raise ModelCheckError(f"the model's network cannot be built from its model.json "
                              f"({type(e).__name__}: {str(e)[:160]})") from None
    if count > max_parameters:
        raise ModelCheckError(f"the model declares {count:,} parameters; this server accepts at most "
                              f"{max_parameters:,}", "upload a smaller network")
    try:
        with torch.no_grad():
            model = build().eval()
            load_weights(model, info.weights_path("best"))
            side = patch_divisors(info.arch, info.arch_params)
            cube = torch.zeros((1, 1, *(max(s, 16) for s in side)))
            out = model(cube)
    except BackSplitError as e:
        raise ModelCheckError(str(e.message), e.hint) from None
    except Exception as e:  # noqa: BLE001
        raise ModelCheckError(f"the model failed its test run on a small volume ({type(e).__name__}: "
                              f"{str(e)[:160]})") from None
    expected = (1, info.schema.num_classes)
    if tuple(out.shape[:2]) != expected:
        raise ModelCheckError(f"the model's output has {out.shape[1]} channels, but its schema has "
                              f"{info.schema.num_classes} classes")
    if not bool(torch.isfinite(out).all()):
        raise ModelCheckError("the model's output on a test volume is not finite (NaN or inf weights)")
    return int(count)
