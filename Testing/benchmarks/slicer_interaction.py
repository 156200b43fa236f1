"""How immediate the Slicer module feels, measured on its MRML logic in a real slicer-core scene.

    python Testing/benchmarks/slicer_interaction.py [--model flair-2d] [--case 0006]

Prints seconds for Initialize and for each Step (model + showing the result in the scene), and milliseconds for
scrubbing the iteration slider and moving the segmentation-threshold slider (both from cached results).
Targets (issue 4): Step ≤ 2 s on a 2-core CPU for a BraTS-sized volume, scrubbing and preview ≤ 100 ms.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1] / "IterMaskSlicer")]

import slicer  # noqa: E402

from headless_slicer import make_scene  # noqa: E402
from itermask.io import read_volume  # noqa: E402
from IterMaskSlicerLib.logic import IterMaskLogic  # noqa: E402

DATA = HERE.parents[2] / "shared" / "data" / "brats2013"


def timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flair-2d")
    parser.add_argument("--case", default="0006")
    args = parser.parse_args()
    make_scene()
    folder = DATA / f"brats_2013_pat{args.case}_1"
    image, affine = read_volume(folder / "Flair_subtrMeanDivStd.nii.gz")
    brain = read_volume(folder / "brainmask.nii.gz")[0] > 0.5
    volume = slicer.util.addVolumeFromArray(np.ascontiguousarray(image.transpose(2, 1, 0)), affine, name="FLAIR")
    mask = slicer.util.addVolumeFromArray(np.ascontiguousarray(brain.transpose(2, 1, 0).astype(np.uint8)), affine,
                                          name="brain", nodeClassName="vtkMRMLLabelMapVolumeNode")
    logic = IterMaskLogic()
    logic.model(args.model)  # loading the bundle is a one-off, not part of Initialize
    print(f"volume {image.shape}, model {args.model}")
    print(f"Initialize                {timed(logic.initialize, volume, mask, args.model):6.2f} s")
    steps = []
    while not logic.session.converged:
        steps.append(timed(logic.step))
        print(f"Step {len(steps) - 1:<2}                   {steps[-1]:6.2f} s   "
              f"(model {logic.session.current.seconds:.2f} s)")
    scrub = [timed(logic.seek, i) for i in list(range(len(steps))) * 3]
    preview = [timed(logic.preview_threshold, t) for t in np.linspace(0.5, 2, 20) * logic.session.threshold]
    print(f"Step median               {statistics.median(steps):6.2f} s   over {len(steps)} steps")
    print(f"Scrub (seek) median       {1000 * statistics.median(scrub):6.0f} ms  max {1000 * max(scrub):.0f} ms")
    print(f"Threshold preview median  {1000 * statistics.median(preview):6.0f} ms  max {1000 * max(preview):.0f} ms")


if __name__ == "__main__":
    main()
