"""How immediate the Slicer module feels with its worker process, measured on its MRML logic in a slicer-core scene.

    python Testing/benchmarks/slicer_interaction.py [--model flair-2d] [--policy itermask2] [--case 0006] [--steps 4]
    python Testing/benchmarks/slicer_interaction.py --model flair-3d --policy itermask3d  # FLAIR default, clean-up

Reports, for a BraTS FLAIR:
- s per Step through the worker (send, compute, write the arrays, read them, show them in the scene) against the same
  step of an ``itermask.Session`` in this process (what the CLI runs), interleaved so both see the same machine load;
  target ≤ 1.1×;
- the longest time the UI side is blocked while a Run streams its steps (each ``poll()``, as the widget's QTimer
  calls it); target ≤ 50 ms;
- ms to move the segmentation-threshold slider (the outlined preview: the worker thresholds and cleans the map up as
  the bundle's rule says) and to scrub to a computed iteration;
- ms the UI is blocked when the scene closes mid-run (the worker tree is killed, never waited for); target ≤ 50 ms.

With Slicer's ``PythonSlicer`` on ``PATH`` (``../shared/vendor/ctkapplauncher/make_python_slicer.sh``) the worker
runs through the launcher, as inside Slicer.
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

import itermask  # noqa: E402
from headless_slicer import make_scene  # noqa: E402
from itermask.io import read_volume  # noqa: E402
from IterMaskSlicerLib.logic import IterMaskLogic, model_file  # noqa: E402

DATA = HERE.parents[2] / "shared" / "data" / "brats2013"


def timed(fn, *args):
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def blocked_during_run(logic, steps: int) -> list[float]:
    """Durations of every ``poll()`` while a run of ``steps`` steps streams in (the widget polls every 30 ms)."""
    polls = []
    logic.begin("run", max_steps=steps)
    while True:
        start = time.perf_counter()
        final = logic.poll()
        polls.append(time.perf_counter() - start)
        if final is not None:
            return polls
        time.sleep(0.03)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flair-2d")
    parser.add_argument("--policy", default="itermask2", help="the bundle's rule and clean-up apply under its policy")
    parser.add_argument("--case", default="0006")
    parser.add_argument("--steps", type=int, default=4, help="steps timed each way (after the first, whole-brain one)")
    args = parser.parse_args()
    make_scene()
    folder = DATA / f"brats_2013_pat{args.case}_1"
    image, affine = read_volume(folder / "Flair_subtrMeanDivStd.nii.gz")
    brain = read_volume(folder / "brainmask.nii.gz")[0] > 0.5
    volume = slicer.util.addVolumeFromArray(np.ascontiguousarray(image.transpose(2, 1, 0)), affine, name="FLAIR")
    mask = slicer.util.addVolumeFromArray(np.ascontiguousarray(brain.transpose(2, 1, 0).astype(np.uint8)), affine,
                                          name="brain", nodeClassName="vtkMRMLLabelMapVolumeNode")
    logic = IterMaskLogic()
    print(f"volume {image.shape}, model {args.model}, policy {args.policy}")
    opened = timed(logic.initialize, volume, mask, args.model, args.policy)
    print(f"Initialize (worker start, model load) {opened:6.2f} s")
    session = itermask.Session(itermask.load_model(model_file(args.model)), image, affine, brain, policy=args.policy)
    worker_steps, direct_steps = [], []
    for n in range(args.steps + 1):  # interleaved; step 0 (whole brain hidden) is reported apart
        worker_steps.append(timed(logic.step))
        direct_steps.append(timed(session.step))
        print(f"Step {n:<2} worker {worker_steps[-1]:6.2f} s   in-process session {direct_steps[-1]:6.2f} s")
    worker, direct = statistics.median(worker_steps[1:]), statistics.median(direct_steps[1:])
    print(f"Step median (1..{args.steps})  worker {worker:6.2f} s   in-process {direct:6.2f} s   ratio {worker / direct:.2f}×")
    polls = blocked_during_run(logic, args.steps)
    print(f"UI blocked during a {args.steps}-step Run: longest poll {1000 * max(polls):.0f} ms, "
          f"median {1000 * statistics.median(polls):.1f} ms over {len(polls)} polls")
    preview = [timed(logic.preview_threshold, t) for t in np.linspace(0.5, 2, 10) * logic.state["threshold"]]
    print(f"Threshold preview (outline) median {1000 * statistics.median(preview):.0f} ms, max {1000 * max(preview):.0f} ms")
    scrub = [timed(logic.seek, i) for i in range(logic.state["count"])]
    print(f"Scrub (seek, round trip to the worker for the map) median {1000 * statistics.median(scrub):.0f} ms")
    logic.begin("run")
    time.sleep(2.0)  # the run is computing
    print(f"Close mid-run (scene close, exit): UI blocked {1000 * timed(logic.close):.0f} ms "
          f"(worker {logic.worker.process is None and 'stopped' or 'still running'})")


if __name__ == "__main__":
    main()
