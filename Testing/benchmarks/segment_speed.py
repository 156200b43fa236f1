"""Whole segmentations, timed side by side with the previous code: seconds, passes, τ_stop, masks, peak memory.

    python Testing/benchmarks/segment_speed.py                      # every configuration on both scans, vs HEAD~1
    python Testing/benchmarks/segment_speed.py --baseline 18d7f57 --runs 3 --configs flair-3d:itermask3d
    python Testing/benchmarks/segment_speed.py --baseline none      # this code only

Each (configuration, scan, code) runs in a fresh process: ``--runs`` whole segmentations, each from reading the
NIfTI file to the mask on the input grid, and the median is printed. The baseline is ``git archive``'d into a
temporary folder and run with the same bundles it shipped, so the gain is measured in the same run, on the same
machine state, not remembered. Also printed: how far τ_stop moved (relative) and how many voxels of the final mask
differ between the two codes, and each process's peak resident memory.
Targets (issue 15, 2-core CPU, idle): IterMask3D (flair-3d) ≤ 8 s, IterMask² ≤ 3 s, IterMask² + subject τ ≤ 45 s.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
SCANS = {  # name: (image, brain mask or None for the scan's non-zero region)
    "pat0006": ("brats2013/brats_2013_pat0006_1/Flair_subtrMeanDivStd.nii.gz",
                "brats2013/brats_2013_pat0006_1/brainmask.nii.gz"),
    "AOO": ("brats2018/Brats18_CBICA_AOO_1/FLAIR.nii.gz", None),
}
CONFIGS = ("flair-3d:itermask3d", "flair-2d:itermask2", "flair-2d:itermask3d")


def segment_once(model_name: str, policy: str, scan: str) -> tuple:
    """Seconds for one whole segmentation of ``scan``, reading included, and its result."""
    import itermask
    from itermask.io import read_volume

    image_path, brain_path = SCANS[scan]
    start = time.perf_counter()
    image, affine = read_volume(DATA / image_path)
    brain = read_volume(DATA / brain_path)[0] if brain_path else None
    session = itermask.Session(itermask.load_model(model_name), image, affine, brain, policy=policy, device="cpu")
    result = session.run()
    return time.perf_counter() - start, result


def measure(config: str, scan: str, runs: int, out: Path) -> None:
    """In the child process: ``runs`` segmentations; figures to stdout as JSON, the last mask to ``out``."""
    model_name, policy = config.split(":")
    seconds = []
    for _ in range(runs):
        elapsed, result = segment_once(model_name, policy, scan)
        seconds.append(elapsed)
    np.save(out, result.mask)
    # The baseline may predate the typed policy report (a dict until issue 14).
    policy = result.policy if isinstance(result.policy, dict) else result.policy.as_dict()
    print(json.dumps({"seconds": statistics.median(seconds), "passes": len(result.iterations),
                      "tau_stop": policy.get("tau_stop"),
                      "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}))


def run_child(code: Path, config: str, scan: str, runs: int, out: Path) -> dict:
    """Run :func:`measure` in a fresh process that imports ``itermask`` from ``code`` (a source tree)."""
    env = dict(os.environ, PYTHONPATH=str(code / "IterMaskSlicer"))
    done = subprocess.run([sys.executable, __file__, "--child", config, scan, str(runs), str(out)], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def exported_tree(revision: str, folder: Path) -> Path:
    """The core package and bundles of ``revision``, unpacked into ``folder``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "IterMaskSlicer"], capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def compare(previous: dict | None, now: dict, previous_mask: Path, mask: Path) -> str:
    """The table columns that set the two codes side by side."""
    if previous is None:
        return "– | – | – | – | –"
    moved = "–"
    if now["tau_stop"] is not None and previous["tau_stop"] is not None:
        moved = f"{abs(now['tau_stop'] - previous['tau_stop']) / abs(previous['tau_stop']):.1e}"
    differ = int((np.load(previous_mask) != np.load(mask)).sum())
    return (f"{previous['seconds']:.1f} | {previous['peak_gb']:.2f} | **{previous['seconds'] / now['seconds']:.2f}×** | "
            f"{moved} | {differ}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD~1", help="git revision to compare with, or 'none'")
    parser.add_argument("--runs", type=int, default=3, help="segmentations per configuration and scan (median)")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), metavar="MODEL:POLICY")
    parser.add_argument("--scans", nargs="+", default=list(SCANS), choices=list(SCANS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline = None if args.baseline == "none" else exported_tree(args.baseline, Path(tempfile.mkdtemp(dir=tmp)))
        print(f"median of {args.runs} runs, reading the scan included; baseline {args.baseline}")
        print("| model:policy | scan | passes | seconds | peak GB | previous s | previous peak GB | speed-up | τ_stop moved "
              "| mask voxels differ |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for config in args.configs:
            for scan in args.scans:
                previous = baseline and run_child(baseline, config, scan, args.runs, tmp / "previous.npy")
                now = run_child(ROOT, config, scan, args.runs, tmp / "now.npy")
                print(f"| {config} | {scan} | {now['passes']} | {now['seconds']:.1f} | {now['peak_gb']:.2f} | "
                      f"{compare(previous, now, tmp / 'previous.npy', tmp / 'now.npy')} |", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        config, scan, runs, out = sys.argv[2:]
        measure(config, scan, int(runs), Path(out))
    else:
        main()
