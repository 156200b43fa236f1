"""Speed and memory of one whole IterMask segmentation of a 240×240×155 BraTS volume on this machine.

    python Testing/benchmarks/segment_speed.py [--model flair-2d] [--policy itermask2] [--case 0006] [--threads N]
    python Testing/benchmarks/segment_speed.py --model flair-3d --policy itermask3d
    python Testing/benchmarks/segment_speed.py --model flair-2d --policy itermask3d --check-path

Prints forward passes, seconds per pass, seconds for the whole segmentation (preprocessing, all iterations, mapping
back to the input grid) and the peak resident memory of the process; for the subject-specific policy also τ_stop.
``--check-path`` runs the same segmentation a second time with every path step reconstructing every slice (no
skipping of slices with nothing hidden) and prints both τ_stop values and times: the skip must not change τ_stop.
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


def timed_run(model, image, affine, brain, policy: str, every_slice: bool = False) -> dict:
    """One whole segmentation; ``every_slice`` turns off the path's skipping of slices with nothing hidden."""
    start = time.perf_counter()
    session = itermask.Session(model, image, affine, brain, policy=policy, device="cpu")
    if every_slice:
        reconstruct = session._reconstruct
        session._reconstruct = lambda mask, noise, first=False, hidden_only=False: reconstruct(mask, noise, first)
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
    parser.add_argument("--check-path", action="store_true",
                        help="also run without skipping slices on the path and compare τ_stop")
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
    if args.check_path:
        full = timed_run(model, image, affine, brain, args.policy, every_slice=True)
        print(f"every slice on path  {full['total']:6.2f} s   tau_stop {full['result'].policy.get('tau_stop')!r:.10} "
              f"(skipping: {result.policy.get('tau_stop')!r:.10}); masks equal: "
              f"{bool((full['result'].mask == result.mask).all())}")


if __name__ == "__main__":
    main()
