"""What a person watches during training: ``training_log.csv`` (loss per step and network) and ``loss.png``."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


class TrainingLog:
    """Loss rows ``step, network, loss`` appended as training goes; on resume from ``start_step`` the rows of steps
    after it (written before a crash, after the last checkpoint) are dropped, so the log matches the model."""

    def __init__(self, folder: Path, start_step: int):
        self.csv, self.png = folder / "training_log.csv", folder / "loss.png"
        rows = []
        if start_step and self.csv.exists():
            with open(self.csv, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= start_step]
        with open(self.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["step", "network", "loss"])
            writer.writeheader()
            writer.writerows(rows)

    def add(self, step: int, losses: dict[str, float]) -> None:
        with open(self.csv, "a", newline="") as handle:
            csv.writer(handle).writerows([step, role, f"{loss:.6g}"] for role, loss in losses.items())

    def plot(self, window: int = 25) -> None:
        """``loss.png``: each network's loss per step (faint) and its moving average over ``window`` steps."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

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
