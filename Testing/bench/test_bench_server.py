"""A miniature of ``backsplit bench server``: a real server on loopback, a tiny volume, one repeat. The
numbers are never asserted (they depend on the machine), only that each is measured and saved."""

from __future__ import annotations

import json
import os

from BackSplitLib.cli import main

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # keep torch on the CPU here and in the server


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def test_miniature_server_bench_measures_and_saves_everything(tmp_path, capsys):
    code = main(["bench", "server", "--out", str(tmp_path), "--shape", "24,40,48", "--repeats", "1",
                 "--iterations", "2", "--threads", "1"])
    captured = capsys.readouterr()
    printed = captured.out + captured.err  # the CLI's rich console may write to either
    assert code == 0, printed
    saved = json.loads((tmp_path / "server_bench.json").read_text())
    predict, upload, finetune = saved["predict"], saved["upload"], saved["finetune"]
    for value in (predict["predict_ratio"], predict["server_median_s"], predict["in_process_median_s"],
                  predict["server_first_request_s"], upload["mb_per_s"], upload["bytes"], upload["median_s"],
                  finetune["median_s"], saved["train"]["seconds"], saved["wall_s"]):
        assert _positive(value), value
    assert isinstance(predict["masks_identical"], bool)
    assert len(predict["server_s"]) == len(predict["in_process_s"]) == 1
    assert saved["settings"]["shape"] == [24, 40, 48] and saved["settings"]["patch_size_xyz"] == [48, 32, 16]
    assert "| predict 48x40x24: server / in-process |" in (tmp_path / "server_report.md").read_text()
    assert "bench server" in printed
    hostile = saved["hostile"]
    assert hostile["tried"] >= 34 and hostile["stored"] == 0 and hostile["server_errors"] == 0, hostile["outcomes"]
    names = {o["name"] for o in hostile["outcomes"]}  # issue 19's probes are in the row
    assert {"96 MiB JSON body to /jobs", "cross-site no-cors multipart POST /cases", "NaN spacing (NIfTI pixdim)",
            "800^3 float32 image with a label of another size", "model spacing 0.01 mm (85 TB at prediction)",
            "job batch 1024 x patch 512^3"} <= names
    assert hostile["refused"] == hostile["tried"] and hostile["idle_sockets"]["health_ok_while_held"]
    assert "hostile inputs" in (tmp_path / "server_report.md").read_text()


def test_bench_server_rejects_a_bad_shape(tmp_path, capsys):
    assert main(["bench", "server", "--out", str(tmp_path), "--shape", "24,40"]) == 2
    captured = capsys.readouterr()
    assert "volume shape" in captured.out + captured.err
