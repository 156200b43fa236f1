"""What a person watches during training: ``training_log.csv`` (loss per step and network), ``loss.png`` and
``samples/step_<step>.png`` (what the networks make of a training sample)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from itermask._shared import pyplot, write_csv


class TrainingLog:
    """Loss rows ``step, network, loss`` appended as training goes; on resume from ``start_step`` the rows of steps
    after it (written before a crash, after the last checkpoint) are dropped, so the log matches the model."""

    def __init__(self, folder: Path, start_step: int):
        self.csv, self.png = folder / "training_log.csv", folder / "loss.png"
        rows = []
        if start_step and self.csv.exists():
            with open(self.csv, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= start_step]
        write_csv(self.csv, rows, ["step", "network", "loss"])

    def add(self, step: int, losses: dict[str, float]) -> None:
        with open(self.csv, "a", newline="") as handle:
            csv.writer(handle).writerows([step, role, f"{loss:.6g}"] for role, loss in losses.items())

    def plot(self, window: int = 25) -> None:
        """``loss.png``: each network's loss per step (faint) and its moving average over ``window`` steps."""
        plt = pyplot()
        with open(self.csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for role in dict.fromkeys(r["network"] for r in rows):
            step = np.array([int(r["step"]) for r in rows if r["network"] == role])
            loss = np.array([float(r["loss"]) for r in rows if r["network"] == role])
            line, = ax.plot(step, loss, lw=0.5, alpha=0.3)
            if len(loss) >= window:
                smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
                ax.plot(step[window - 1:], smooth, color=line.get_color(), label=f"{role} ({window}-step mean)")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("weighted MSE (z-score²)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(self.png, dpi=100)
        plt.close(fig)

    def show_reconstructions(self, step: int, batch: dict[str, torch.Tensor], recons: dict[str, torch.Tensor]) -> Path:
        """``samples/step_<step>.png``: the first sample of the step's batch (for volumes, its axial slice with the
        most hidden voxels) — the image, what was hidden, and each network's reconstruction and squared error inside
        the brain."""
        hidden = batch["hidden"][0, 0]
        z = int(hidden.flatten(1).sum(1).argmax()) if hidden.dim() == 3 else None

        def axial(t: torch.Tensor) -> np.ndarray:
            t = t[0, 0]
            return (t if z is None else t[z]).float().numpy()

        plt = pyplot()
        brain = axial(batch["brain"]) > 0
        panels = [("image", axial(batch["x"]), "gray"), ("hidden", axial(batch["hidden"]), "gray")]
        for role, recon in recons.items():
            panels.append((f"{role} reconstruction", axial(recon) * brain, "gray"))
            panels.append((f"{role} error²", (axial(recon) - axial(batch["x"])) ** 2 * brain, "magma"))
        fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6))
        for ax, (title, image, cmap) in zip(axes, panels):
            limits = {"vmin": 0, "vmax": 4} if cmap == "magma" else {"vmin": -3, "vmax": 3} if title != "hidden" else {}
            ax.imshow(image, cmap=cmap, origin="lower", **limits)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
        fig.suptitle(f"step {step}", fontsize=8)
        path = self.csv.parent / "samples" / f"step_{step:06d}.png"
        path.parent.mkdir(exist_ok=True)
        fig.savefig(path, dpi=80)
        plt.close(fig)
        return path
