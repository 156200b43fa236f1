"""The pictures a person reads before the tables: overlays of truth and prediction, τ(t) curves with the fit and
τ_stop (IterMask3D Fig. 3), and Dice against lesion size."""
from __future__ import annotations

import numpy as np

from itermask._shared import pyplot
from itermask.policies import PolicyReport


def lesion_slices(truth: np.ndarray, axis: int) -> list[int]:
    """Slice indices along ``axis`` through the lesion: the one with the most lesion and those at a quarter and
    three quarters of the lesion's extent (the middle slice when there is no lesion).

    >>> truth = np.zeros((1, 1, 20), bool); truth[..., 8:13] = True
    >>> lesion_slices(truth, axis=2)
    [8, 9, 11]
    """
    per_slice = np.asarray(truth).sum(axis=tuple(a for a in range(truth.ndim) if a != axis))
    present = np.nonzero(per_slice)[0]
    if not len(present):
        return [truth.shape[axis] // 2]
    first, last = int(present[0]), int(present[-1])
    quarters = [first + round(f * (last - first)) for f in (0.25, 0.75)]
    return sorted({int(np.argmax(per_slice)), *quarters})


def save_overlay_figure(path, title: str, image: np.ndarray, brain: np.ndarray, truth: np.ndarray,
                        predictions: dict[str, np.ndarray], axis: int) -> None:
    """Rows: slices through the lesion; columns: the image with the truth (green), then each method's segmentation
    (red) with the truth's outline (green). ``axis`` is the input array axis closest to superior-inferior."""
    plt = pyplot()
    slices = lesion_slices(truth, axis)
    cols = 1 + len(predictions)
    fig, axes = plt.subplots(len(slices), cols, figsize=(2.3 * cols, 2.4 * len(slices)), squeeze=False)
    inside = image[brain]
    low, high = np.percentile(inside, [1, 99.5])

    def cut(volume, index):
        return np.rot90(np.take(volume, index, axis=axis))

    for row, index in enumerate(slices):
        shown = cut(np.where(brain, image, low), index)
        outline = cut(truth, index).astype(float)
        for col, (label, mask) in enumerate([("truth", truth), *predictions.items()]):
            ax = axes[row, col]
            ax.imshow(shown, cmap="gray", vmin=low, vmax=high)
            overlay = cut(mask, index)
            colour = [0, 0.8, 0] if col == 0 else [1, 0.1, 0.1]
            ax.imshow(np.dstack([*(np.full(overlay.shape, c) for c in colour), 0.45 * overlay]))
            if col and outline.any():
                ax.contour(outline, levels=[0.5], colors="lime", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(label, fontsize=7)
        axes[row, 0].set_ylabel(f"slice {index}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_tau_figure(path, title: str, policy: PolicyReport) -> None:
    """τ(t) of an IterMask3D shrink path (points), the fitted a·tan(b·t) and τ_stop at t* (as in the paper's Fig. 3)."""
    plt = pyplot()
    tau = np.asarray(policy.tau_path, float)
    t = np.arange(len(tau))
    stop = policy.stop
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.plot(t, tau, ".", ms=3, label="τ(t): shrinks the mask by 1 % of the brain")
    ax.plot(t, stop.fit(t), "-", lw=1, label=f"a·tan(b·t), R² = {stop.fit.r2:.2f}")
    ax.axhline(stop.tau_stop, color="k", ls="--", lw=0.8, label=f"τ_stop = {stop.tau_stop:.3g}")
    ax.axvline(stop.t_star, color="grey", ls=":", lw=0.8, label=f"t* = {stop.t_star} ({stop.method})")
    ax.set_xlabel("path step t")
    ax.set_ylabel("τ (squared z-score)")
    ax.set_ylim(0, max(float(np.nanmax(tau[: stop.t_star + 1])) * 2.5, stop.tau_stop * 1.5))
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def save_dice_vs_size_figure(path, rows: list[dict]) -> None:
    """Per-case Dice of every method against lesion volume (ml, log scale)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        ax.plot([r["lesion_ml"] for r in mine], [r["dice"] for r in mine], "o", ms=4, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("lesion volume (ml)")
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
