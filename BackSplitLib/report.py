"""Tables and matplotlib figures for demos, evaluations and benchmarks (PNG, headless backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _overlay(ax, image: np.ndarray, mask: np.ndarray, color: str, title: str, window=(-160, 240)) -> None:
    # Rows of an LPS array run anterior -> posterior: drawn top-down, anterior is up (radiological view).
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1])
    if mask is not None and mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=[color], linewidths=1.5)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def demo_figure(path: Path, image: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray],
                summary: dict[str, dict], case: str) -> Path:
    """One axial slice (image, truth, each model's prediction) plus Dice and FP-component bars."""
    z = int(np.argmax(truth.reshape(truth.shape[0], -1).sum(1))) if truth.any() else truth.shape[0] // 2
    modes = list(predictions)
    fig, axes = plt.subplots(1, 2 + len(modes) + 1, figsize=(3.2 * (3 + len(modes)), 3.4))
    _overlay(axes[0], image[z], None, "y", f"{case}, slice {z}")
    _overlay(axes[1], image[z], truth[z], "yellow", "truth (lesion)")
    colors = {"binary": "tab:red", "backsplit": "tab:green"}
    for ax, mode in zip(axes[2:], modes):
        _overlay(ax, image[z], predictions[mode][z], colors.get(mode, "tab:blue"), f"{mode} prediction")
    ax = axes[-1]
    x = np.arange(len(modes))
    dice = [summary[m]["dice"] for m in modes]
    fp = [summary[m]["fp_per_case"] for m in modes]
    ax.bar(x - 0.2, dice, 0.4, label="lesion Dice", color="tab:blue")
    ax2 = ax.twinx()
    ax2.bar(x + 0.2, fp, 0.4, label="FP comp./case", color="tab:orange")
    ax.set_xticks(x, modes)
    ax.set_ylim(0, 1.3)  # headroom for the legend
    ax2.set_ylim(0, 1.3 * max(max(fp), 0.1))
    ax.set_ylabel("lesion Dice")
    ax2.set_ylabel("FP components per case")
    ax.set_title("test set", fontsize=9)
    handles = [h for a in (ax, ax2) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles, ["lesion Dice", "FP comp./case"], loc="upper center", fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
