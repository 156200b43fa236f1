"""Speed and memory of one whole IterMask segmentation of a 240×240×155 BraTS volume on this machine.

    python Testing/benchmarks/segment_speed.py [--model flair-2d] [--policy itermask2] [--case 0006] [--threads N]
    python Testing/benchmarks/segment_speed.py --model flair-3d --policy itermask3d

Prints forward passes, seconds per pass, seconds for the whole segmentation (preprocessing, all iterations, mapping
back to the input grid) and the peak resident memory of the process; for the subject-specific policy also τ_stop.
Targets: IterMask² ≤ 30 s and ≤ 3 GB (issue 2); IterMask3D ≤ 60 s and ≤ 4 GB (issue 3), on a 2-core CPU.
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


def timed_run(model, image, affine, brain, policy: str) -> dict:
    """One whole segmentation, timed in its parts."""
    start = time.perf_counter()
    session = itermask.Session(model, image, affine, brain, policy=policy, device="cpu")
    prepared_at = time.perf_counter()
    session.run()
    iterated_at = time.perf_counter()
    result = session.result()
    done = time.perf_counter()
    return {"session": session, "result": result, "preprocessing": prepared_at - start,
            "iterating": iterated_at - prepared_at, "mapping_back": done - iterated_at, "total": done - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flair-2d")
    parser.add_argument("--policy", default="itermask2", choices=["itermask2", "itermask3d"])
    parser.add_argument("--case", default="0006")
    parser.add_argument("--image-name", default="Flair_subtrMeanDivStd")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    folder = DATA / f"brats_2013_pat{args.case}_1"
    image, affine = read_volume(folder / f"{args.image_name}.nii.gz")
    brain = read_volume(folder / "brainmask.nii.gz")[0]
    model = itermask.load_model(args.model)
    run = timed_run(model, image, affine, brain, args.policy)
    session, result = run["session"], run["result"]
    per_pass = [it.seconds for it in session.iterations]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"volume {image.shape}, model {model.name} ({model.dims}D), policy {args.policy}, "
          f"model grid {session.prepared.grid.shape}, threads {args.threads}")
    print(f"preprocessing        {run['preprocessing']:6.2f} s")
    print(f"forward passes       {len(per_pass):6d}   (converged: {result.converged})")
    print(f"seconds / pass       {sum(per_pass) / len(per_pass):6.2f} s   "
          f"(first {per_pass[0]:.2f} s, slowest {max(per_pass):.2f} s)")
    print(f"all iterations       {run['iterating']:6.2f} s")
    print(f"back to input grid   {run['mapping_back']:6.2f} s")
    print(f"whole segmentation   {run['total']:6.2f} s")
    print(f"peak memory (RSS)    {peak_gb:6.2f} GB")
    if args.policy == "itermask3d":
        stop = result.policy["stop"]
        print(f"tau_stop             {result.policy['tau_stop']:.6g}   (t* = {stop['t_star']}, {stop['method']})")


if __name__ == "__main__":
    main()
