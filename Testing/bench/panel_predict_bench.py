"""Where the panel's Predict spends its time, against `backsplit predict` on the same volume and model (issue 21
§4). Prints numbers; it is not a test and asserts nothing.

    PYTHONPATH=. python Testing/bench/panel_predict_bench.py --run RUN_FOLDER --image CT.nii.gz [--repeat 2]

Runs, on this machine: (1) the CLI, `python -m BackSplitLib predict` in a subprocess (process start and
imports included, as a user runs it); (2) the panel's path on real MRML (slicer-core, no browser): the volume
copied out of the scene, sent to a loopback `backsplit serve` holding the run, the answer measured
(`lesion_findings`) and shown (`prediction.show_prediction`), each stage timed, with and without the
auxiliary classes (and once the lesion alone without its 3D surface, for comparison). The page adds its own rendering on top (trame-slicer's views), not measured here.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "Testing" / "slicer_module"), str(REPO / "Testing" / "server"), str(REPO), str(REPO / "BackSplit")]


def timed(what: str, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    print(f"  {what:<44s} {time.perf_counter() - start:7.2f} s", flush=True)
    return result


def cli_predict(run: Path, image: Path, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "BackSplitLib", "predict", str(run), str(image), "--out", str(out)],
                   check=True, cwd=REPO, capture_output=True)
    return time.perf_counter() - start


def panel_predict(server_url: str, token: str, image_path: Path, classes: bool, surface: bool) -> float:
    import SimpleITK as sitk

    from mrml_bootstrap import bootstrap
    from BackSplitLib.metrics import lesion_findings
    from BackSplitSlicer.backends import RemoteBackend
    from BackSplitSlicer.case import import_prediction, prediction_node
    from BackSplitSlicer.prediction import show_prediction, volume_image
    from BackSplitSlicer.selftest import add_volume_from_sitk

    scene = bootstrap()["scene"]
    volume = add_volume_from_sitk(sitk.ReadImage(str(image_path), sitk.sitkFloat32), "CT", scene)
    backend = RemoteBackend(server_url, token)
    start = time.perf_counter()
    image = timed("volume out of the scene", volume_image, volume)
    result = timed(f"server predict (upload, infer, download){' + classes' if classes else ''}", backend.predict,
                   image, classes=classes)
    findings = timed("lesion_findings", lesion_findings, result.mask)
    if surface:  # the panel's own import: the lesion with its 3D surface, auxiliary classes without
        timed(f"show_prediction (lesion + 3D surface{', classes' if classes else ''})", show_prediction, result,
              volume, None, classes)
    else:
        timed("import the lesion alone, no 3D surface", import_prediction, result.mask, volume,
              prediction_node(volume), show_3d=False)
    total = time.perf_counter() - start
    scene.Clear()
    print(f"  -> {findings['voxels']} lesion voxels; panel total {total:.2f} s")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    from BackSplitLib.client import BackSplitClient
    from server_harness import ServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = ServerProcess(tmp / "data", tmp / "token", max_upload="4G").start(timeout=120)
        try:
            BackSplitClient(server.url, server.token).upload_model(args.run, promote=True)
            for attempt in range(args.repeat):
                print(f"attempt {attempt + 1}")
                cli = cli_predict(args.run, args.image, tmp / f"cli-{attempt}")
                print(f"  {'backsplit predict (CLI, subprocess)':<44s} {cli:7.2f} s")
                for classes, surface in ((False, False), (False, True), (True, True)):
                    panel = panel_predict(server.url, server.token, args.image, classes, surface)
                    print(f"  ratio panel / CLI: {panel / cli:.2f}")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
