"""import-model: plain MONAI networks trained elsewhere become run folders that predict exactly as before."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DynUNet, SegResNet, UNet

from BackSplitLib.cli import main
from BackSplitLib.errors import RunError
from BackSplitLib.importing import import_state_dict
from BackSplitLib.networks import default_params
from BackSplitLib.runs import build_model, load_run
from BackSplitLib.schema import LabelSchema

PATCH, SPACING = [32, 32, 32], [1.0, 1.0, 1.0]


def plain_monai(arch: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if arch == "unet":
        p = default_params("unet")
        return UNet(3, 1, 2, channels=p["channels"], strides=p["strides"], num_res_units=2, norm="instance", act="prelu")
    if arch == "segresnet":
        return SegResNet(3, 16, 1, 2, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1), norm=("group", {"num_groups": 8}))
    p = default_params("dynunet", PATCH, SPACING)
    return DynUNet(3, 1, 2, p["kernel_size"], p["strides"], p["strides"][1:], filters=p["filters"],
                   norm_name=("instance", {"affine": True}),
                   act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}))


@pytest.mark.parametrize("arch", ["unet", "segresnet", "dynunet"])
def test_imported_plain_monai_model_predicts_exactly_as_the_original(arch, tmp_path):
    network = plain_monai(arch).eval()
    torch.save({"state_dict": network.state_dict()}, tmp_path / "weights.pt")
    LabelSchema.binary_schema("lesion").save(tmp_path / "schema.json")
    run = import_state_dict(tmp_path / "weights.pt", arch, tmp_path / "schema.json", tmp_path / "run", SPACING, PATCH)
    imported = build_model(load_run(run)).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), network(x), atol=1e-5, rtol=0)


def test_import_model_cli_and_mismatched_weights(tmp_path, capsys):
    network = plain_monai("segresnet")
    torch.save(network.state_dict(), tmp_path / "weights.pt")
    LabelSchema.binary_schema("lesion").save(tmp_path / "schema.json")
    code = main(["import-model", str(tmp_path / "weights.pt"), "--arch", "segresnet", "--schema",
                 str(tmp_path / "schema.json"), "--out", str(tmp_path / "run"), "--spacing", "1,1,1",
                 "--patch-size", "32,32,32"])
    assert code == 0 and load_run(tmp_path / "run").arch == "segresnet"
    code = main(["import-model", str(tmp_path / "weights.pt"), "--arch", "unet", "--schema",
                 str(tmp_path / "schema.json"), "--out", str(tmp_path / "wrong")])
    assert code != 0 and "does not fit a unet" in capsys.readouterr().err
    assert not (tmp_path / "wrong").exists()
    with pytest.raises(RunError, match="not a readable weights file"):
        (tmp_path / "junk.pt").write_bytes(b"junk")
        import_state_dict(tmp_path / "junk.pt", "unet", tmp_path / "schema.json", tmp_path / "r", SPACING, PATCH)
