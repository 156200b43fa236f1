"""Render what the Slicer module shows, with Slicer's own slice compositing (slicer-core, no window), for the README.

    python Testing/render_slice_views.py [--case 0006] [-o IterMaskSlicer/Resources/Screenshots/slice-views.png]

Columns: the iterations of a session on a held-out BraTS FLAIR (mask as label layer over the scan), then the
anomaly map as a heat foreground. The pictures are the MRML slice logic's blend output, not a re-drawing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "IterMaskSlicer")]

import slicer  # noqa: E402
from vtkmodules.util.numpy_support import vtk_to_numpy  # noqa: E402

from headless_slicer import make_scene  # noqa: E402
from itermask.figures import spread  # noqa: E402
from itermask.io import read_volume  # noqa: E402
from IterMaskSlicerLib.logic import IterMaskLogic  # noqa: E402

DATA = HERE.parents[1] / "shared" / "data" / "brats2013"


def composited_slice(scene, offset_mm: float, pixels: int = 256) -> np.ndarray:
    """The Red view's blended RGBA image at an axial offset, rows top to bottom."""
    logic, node = scene.slice_logic, scene.slice_logic.GetSliceNode()
    logic.ResizeSliceNode(pixels, pixels)
    logic.FitSliceToAll()
    node.SetSliceOffset(offset_mm)
    connection = logic.GetImageDataConnection()
    connection.GetProducer().Update()
    image = connection.GetProducer().GetOutputDataObject(connection.GetIndex())
    width, height, _ = image.GetDimensions()
    return vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[::-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="0006")
    parser.add_argument("-o", "--output", default=str(HERE.parent / "IterMaskSlicer/Resources/Screenshots/slice-views.png"))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scene = make_scene()
    folder = DATA / f"brats_2013_pat{args.case}_1"
    image, affine = read_volume(folder / "Flair_subtrMeanDivStd.nii.gz")
    brain = read_volume(folder / "brainmask.nii.gz")[0] > 0.5
    volume = slicer.util.addVolumeFromArray(np.ascontiguousarray(image.transpose(2, 1, 0)), affine, name="FLAIR")
    volume.GetDisplayNode().SetAutoWindowLevel(False)
    volume.GetDisplayNode().SetWindowLevelMinMax(-2.5, 4.0)
    labelmap = slicer.util.addVolumeFromArray(np.ascontiguousarray(brain.transpose(2, 1, 0).astype(np.uint8)), affine,
                                              name="brain", nodeClassName="vtkMRMLLabelMapVolumeNode")
    logic = IterMaskLogic(scene)
    logic.initialize(volume, labelmap)
    logic.run()
    ijk = np.argwhere(logic.iteration_mask(logic.state["position"]))
    offset = float((affine @ np.r_[np.median(ijk, axis=0), 1.0])[2])  # through the middle of the final mask
    panels = []
    for index in spread(logic.state["count"], 6):  # an IterMask3D path has a hundred iterations
        logic.seek(index)
        logic.show_in_slice_views(show_anomaly_map=False)
        panels.append((f"iteration {index}", composited_slice(scene, offset)))
    logic.show_in_slice_views(show_anomaly_map=True, opacity=0.7)
    scene.slice_logic.GetSliceCompositeNode().SetLabelVolumeID(None)
    panels.append(("anomaly map (foreground)", composited_slice(scene, offset)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (title, rgba) in zip(axes, panels):
        ax.imshow(rgba)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle("IterMask in Slicer's slice view (slicer-core compositing): mask as label layer over held-out FLAIR",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.output, dpi=100)
    logic.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
