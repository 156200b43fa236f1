"""The picture a person looks at first: the mask shrinking, iteration by iteration, over a few slices."""
from __future__ import annotations

import numpy as np

from ._shared import pyplot


def spread(count: int, n: int) -> list[int]:
    """Up to ``n`` indices spread over ``range(count)``, always including the first and the last."""
    return sorted(set(np.linspace(0, count - 1, min(n, count)).round().astype(int).tolist()))


def save_iteration_figure(session, result, path, n_slices: int = 3, n_iterations: int = 6) -> None:
    """PNG: rows are axial slices (through the largest part of the segmentation), columns are iterations, then the
    final anomaly map (the rule's residual on the model grid) outlining ``result.mask``: the segmentation written to
    ``mask.nii.gz``, after the bundle's clean-up. Shown on the model grid in neurological orientation (patient's right
    on the right)."""
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    orange = ListedColormap(["orange"])

    prepared = session.prepared
    shown = session.iterations[: session.position + 1]
    final = shown[-1]
    segmentation = prepared.mask_from_input(result.mask)  # the mask as written, on the grid shown here
    anomaly = session.model_grid_anomaly_map()
    focus = next(v for v in (segmentation, final.mask, prepared.brain) if v.any())
    per_slice = focus.sum(dim=(1, 2)).float()
    # Slices where the segmentation (else the mask) is at least half its largest extent, spread over that range.
    wide = (per_slice >= 0.5 * per_slice.max()).nonzero()[:, 0].tolist()
    slices = [wide[i] for i in spread(len(wide), n_slices)]
    columns = [shown[i] for i in spread(len(shown), n_iterations)]
    fig, axes = plt.subplots(len(slices), len(columns) + 1, figsize=(2.2 * (len(columns) + 1), 2.3 * len(slices)),
                             squeeze=False)
    vmax = float(np.percentile(anomaly[prepared.brain].numpy(), 99.5)) or 1.0
    for row, z in enumerate(slices):
        image = np.where(prepared.brain[z].numpy(), prepared.image[z].numpy(), -2.5)
        for col, it in enumerate(columns):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", origin="lower", vmin=-2.5, vmax=4)
            ax.imshow(np.ma.masked_where(~it.mask[z].numpy(), it.mask[z].numpy()), cmap=orange, alpha=0.45,
                      origin="lower")
            if row == 0:
                ax.set_title(f"iteration {it.index}\nmask {100 * it.mask.sum().item() / session.brain_voxels:.1f}%",
                             fontsize=8)
        ax = axes[row, -1]
        ax.imshow(anomaly[z].numpy(), cmap="inferno", origin="lower", vmin=0, vmax=vmax)
        ax.contour(segmentation[z].numpy(), levels=[0.5], colors="cyan", linewidths=0.6)
        if row == 0:
            ax.set_title("anomaly map\n(cyan: segmentation)", fontsize=8)
        axes[row, 0].set_ylabel(f"axial slice {z}", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{session.model.name}: mask (orange) shrinking towards what the model cannot reconstruct", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
