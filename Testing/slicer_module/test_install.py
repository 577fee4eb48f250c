"""Local mode's install step: torch the way the PyTorch extension gets it, in child processes, offline too.

The real runs use an empty wheel folder (offline, ``--no-index``) and a Python that already has what is asked
for, so pip resolves for real, changes nothing and needs no network.
"""

from __future__ import annotations

import sys
import time

import torch

from BackSplitSlicer.backends import LocalBackend
from BackSplitSlicer.install import (TORCH_BUILD_CHOOSER, TORCH_BUILD_MODULE, TorchBuild, install_steps,
                                     torch_build)
from BackSplitSlicer.panel import MemorySettings, PanelController
from BackSplitSlicer.redraw import APPEND, KEEP, Drawn

LINES = ["torch>=2.2", "monai>=1.4", "numpy>=1.24"]


def test_online_light_the_torch_installs_torch_first_as_the_pytorch_extension_does(tmp_path):
    requirements, constraints = tmp_path / "r.txt", tmp_path / "c.txt"
    steps = install_steps("py", requirements, constraints, LINES)
    assert [s.command[:5] for s in steps] == [
        ["py", "-m", "pip", "install", "--progress-bar"],
        ["py", "-m", TORCH_BUILD_MODULE, "install", "--progress-bar"],
        ["py", "-m", "pip", "install", "--progress-bar"]]
    assert TORCH_BUILD_CHOOSER in steps[0].command and TORCH_BUILD_CHOOSER.startswith("light-the-torch")
    # light-the-torch gets pyproject's torch range and Slicer's pins; pip then installs the rest.
    assert "torch>=2.2" in steps[1].command and steps[1].command[-2:] == ["-c", str(constraints)]
    assert steps[2].command[-4:] == ["-r", str(requirements), "-c", str(constraints)]
    assert not any("--no-index" in s.command for s in steps)


def test_offline_the_wheel_folder_serves_torch_too(tmp_path):
    steps = install_steps("py", tmp_path / "r.txt", tmp_path / "c.txt", LINES, wheel_folder=str(tmp_path))
    assert len(steps) == 1 and TORCH_BUILD_MODULE not in steps[0].command  # nothing that needs the internet
    assert steps[0].command[-3:] == ["--no-index", "--find-links", str(tmp_path)]


def test_the_torch_build_says_cuda_or_cpu():
    assert "CPU-only build" in TorchBuild("2.13.0+cpu").describe()
    assert "CUDA 12.4 build, GPU: NVIDIA RTX" in TorchBuild("2.5.1+cu124", cuda="12.4", gpu="NVIDIA RTX").describe()
    assert "no usable GPU" in TorchBuild("2.5.1+cu124", cuda="12.4").describe()
    assert torch_build(sys.executable + "-no-such-python") is None  # the real probe runs in the panel test


def test_the_panel_installs_without_blocking_streams_the_log_and_names_the_torch_build(scene, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    panel = PanelController(scene, MemorySettings(), ask=lambda question: True,
                            backend_factory=lambda kind, **kw: LocalBackend(tmp_path / "data", python=sys.executable))
    panel.set_wheel_folder(str(wheels))
    drawn, updates, slowest = Drawn(), [], 0.0
    panel.observe(lambda state: updates.append(drawn.grow("install_log", state.install_log)[0]))
    started = time.monotonic()
    panel.install()
    assert time.monotonic() - started < 1.0 and panel.state().connection == "installing"  # pip runs in a child
    # Offline, torch is in the one pip call with the wheel folder (before, a torch step ran first and failed).
    assert "torch>=2.2" in panel.lifecycle.installer.requirements.read_text(encoding="utf-8").split()
    deadline = time.monotonic() + 300
    while panel.state().connection == "installing" and time.monotonic() < deadline:
        started = time.monotonic()
        panel.tick()
        slowest = max(slowest, time.monotonic() - started)
        time.sleep(0.05)
    while panel.state().busy and time.monotonic() < deadline:  # the package check after pip
        panel.tick()
        time.sleep(0.05)
    state = panel.state()
    assert state.status.startswith("Installed."), (state.status, state.message)
    assert f"PyTorch {torch.__version__}" in state.torch_build and state.torch_build in state.status
    assert slowest < 0.5  # no tick waited for pip
    assert "--no-index" in state.install_log and "Requirement already satisfied: torch" in state.install_log
    assert panel.lifecycle.installer.torch.version == torch.__version__ and panel.lifecycle.installer.torch.cuda == torch.version.cuda
    # The log only ever grew: a face appends to it (after the first draw), it never resets it.
    assert updates[0] != KEEP and set(updates[1:]) <= {APPEND, KEEP} and APPEND in updates
