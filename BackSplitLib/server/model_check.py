"""An uploaded run folder is proven usable before it is stored: sized on the meta device, loaded, run once.

Garbage weights registered with ``promote=true`` made every default ``/predict`` fail; a 3 KB zip that
declared 2048/4096 channels cost 4.8 GiB at the first prediction. So the network its model.json describes
is first built on ``torch.device("meta")`` (no memory) and its parameter count bounded; then it is built
for real, its weights loaded, and run once on a small CPU cube. Any failure is the client's: 422.
"""

from __future__ import annotations

from BackSplitLib.errors import BackSplitError
from BackSplitLib.run_folder import RunInfo

MAX_MODEL_PARAMETERS = 200_000_000  # ~800 MB of float32 weights; nnU-Net-sized 3D networks have ~30 M


class ModelCheckError(BackSplitError):
    """The uploaded model cannot be used (the server answers 422)."""


def check_uploaded_model(info: RunInfo, max_parameters: int = MAX_MODEL_PARAMETERS) -> int:
    """Build, size, load and run the run's network once; returns its parameter count."""
    import torch

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
