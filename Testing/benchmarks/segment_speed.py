"""Speed and memory of one whole IterMask segmentation of a 240×240×155 BraTS volume on this machine.

    python Testing/benchmarks/segment_speed.py [--model flair-2d] [--case 0006] [--threads N]

Prints seconds per iteration, iterations to convergence, seconds for the whole segmentation (preprocessing, all
iterations, mapping back to the input grid) and the peak resident memory of the process. Targets (issue 2):
≤ 30 s and ≤ 3 GB on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

import itermask
from itermask.io import read_volume

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "brats2013"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flair-2d")
    parser.add_argument("--case", default="0006")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = DATA / f"brats_2013_pat{args.case}_1"
    image, affine = read_volume(folder / "Flair_subtrMeanDivStd.nii.gz")
    brain = read_volume(folder / "brainmask.nii.gz")[0]
    model = itermask.load_model(args.model)
    start = time.perf_counter()
    session = itermask.Session(model, image, affine, brain, device="cpu")
    prepared_at = time.perf_counter()
    session.run()
    iterated_at = time.perf_counter()
    result = session.result()
    done = time.perf_counter()
    per_iteration = [it.seconds for it in session.iterations]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"volume {image.shape}, model {model.name}, model grid {session.prepared.grid.shape}, threads {args.threads}")
    print(f"preprocessing        {prepared_at - start:6.2f} s")
    print(f"iterations           {len(per_iteration):6d}   (converged: {result.converged})")
    print(f"seconds / iteration  {sum(per_iteration) / len(per_iteration):6.2f} s   "
          f"(first {per_iteration[0]:.2f} s, slowest {max(per_iteration):.2f} s)")
    print(f"all iterations       {iterated_at - prepared_at:6.2f} s")
    print(f"back to input grid   {done - iterated_at:6.2f} s")
    print(f"whole segmentation   {done - start:6.2f} s")
    print(f"peak memory (RSS)    {peak_gb:6.2f} GB")


if __name__ == "__main__":
    main()
