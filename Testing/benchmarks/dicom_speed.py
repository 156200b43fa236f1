"""DICOM speed: reading a 384-slice series against dcm2niix on the same files, and writing the DICOM SEG of a
256-slice mask.

    python Testing/benchmarks/dicom_speed.py             # median of 5 runs each
    python Testing/benchmarks/dicom_speed.py --runs 9

The series are written first (into a temporary folder) from the shared studyforrest T1w, one MR file per slice as
a scanner stores them (``Testing/dicom_writer.py``): 384 sagittal slices of 274×384, and 256 axial slices of
256×256. The runs alternate between dcm2niix (``-z n``: uncompressed NIfTI, so it does no more than convert) and
``itermask.io.read_volume(FOLDER)`` in this process, after one warm-up read each; a fresh ``python -c`` process,
imports included (what one ``itermask segment`` pays once), is timed as well. The SEG is written of a lesion-sized
mask (a 30 mm sphere) and of a large one (every voxel above the scan's 80th percentile), so frames are packed from
real content. Target (issue 27): reading ≤ 2× dcm2niix. Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Testing"))
from dicom_writer import geometry, write_series  # noqa: E402

from itermask.dicom import find_series  # noqa: E402
from itermask.dicom_seg import write_dicom_seg  # noqa: E402
from itermask.io import read_volume  # noqa: E402

T1W = ROOT.parent / "shared" / "data" / "healthy" / "studyforrest_T1w" / "T1w.nii.gz"


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    exe = shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which("dcm2niix")
    t1w = np.asarray(nib.load(T1W).dataobj).astype(np.int16)  # 274×384×384
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        series = tmp / "sagittal384"
        write_series(series, t1w, geometry("sagittal", spacing=(0.67, 0.67, 0.7)), series_number=2,
                     description="T1w sagittal")
        size_mb = sum(p.stat().st_size for p in series.iterdir()) / 2**20

        def convert():
            out = tmp / "dcm2niix"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            subprocess.run([exe, "-z", "n", "-o", str(out), str(series)], check=True, capture_output=True)

        def fresh_process():
            subprocess.run([sys.executable, "-c", f"from itermask.io import read_volume; read_volume({str(series)!r})"],
                           check=True)

        convert(), read_volume(series)  # warm-up: file cache, imports
        theirs, ours, fresh = [], [], []
        for _ in range(args.runs):  # alternating, so all see the same machine state
            theirs.append(timed(convert))
            ours.append(timed(lambda: read_volume(series)))
            fresh.append(timed(fresh_process))
        dcm, own, fresh = (statistics.median(t) for t in (theirs, ours, fresh))
        print(f"reading 384 slices of 274×384 int16 ({size_mb:.0f} MB), median of {args.runs}:")
        print(f"  dcm2niix -z n          {dcm:6.3f} s")
        print(f"  read_volume(FOLDER)    {own:6.3f} s   {own / dcm:.2f}× dcm2niix (target ≤ 2×)")
        print(f"  fresh process+imports  {fresh:6.3f} s   {fresh / dcm:.2f}× dcm2niix")

        axial = tmp / "axial256"
        write_series(axial, t1w[9:265, 64:320, 64:320], geometry("axial_supine", spacing=(0.7, 0.67, 0.67)),
                     series_number=3, description="T1w axial")
        (source,) = find_series(axial)
        image, affine = read_volume(source)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        offsets = (np.indices(image.shape).T - np.array(image.shape) / 2) * spacing
        sphere = (np.linalg.norm(offsets, axis=-1) < 15.0).T
        print(f"writing the DICOM SEG of a 256-slice mask (256×256 frames), median of {args.runs}:")
        for name, mask in (("30 mm sphere", sphere), ("above 80th percentile", image > np.percentile(image, 80))):
            path = tmp / "seg.dcm"
            write = lambda: write_dicom_seg(path, mask, affine, source, model="t1-3d", parameters={})  # noqa: E731
            write()
            took = statistics.median(timed(write) for _ in range(args.runs))
            frames = int(mask.any(axis=(0, 1)).sum())
            print(f"  {name:<22} {took:6.3f} s   {frames} frames, {path.stat().st_size / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
