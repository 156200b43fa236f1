"""Shared fixtures: real MRI from ../shared/data and a tiny model trained here on real healthy slices."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "IterMaskSlicer"))  # the Slicer module folder: IterMaskSlicerLib, as Slicer sees it
DATA = REPO.parent / "shared" / "data"
BRATS = DATA / "brats2013"
MS = DATA / "ms_lesjak2017" / "patient26"



def brats(case: str, name: str = "Flair_subtrMeanDivStd") -> Path:
    return BRATS / f"brats_2013_pat{case}_1" / f"{name}.nii.gz"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small 2D model pair trained on tumour-free parts of two BraTS FLAIR scans, calibrated on a third.

    4 mm grid and narrow channels keep it to about a minute on two CPU cores; it is trained through the real
    ``itermask train`` command on real scans, so every test that uses it exercises the shipped code path.
    """
    from itermask.cli import main

    folder = tmp_path_factory.mktemp("tiny_model")
    rows = ["image,brain_mask,lesion_mask,split"]
    for case, split in (("0003", "train"), ("0004", "train"), ("0005", "calibration")):
        rows.append(f"{brats(case)},{brats(case, 'brainmask')},{brats(case, 'OTMultiClass')},{split}")
    manifest = folder / "cases.csv"
    manifest.write_text("\n".join(rows) + "\n")
    code = main(["train", "--data", str(manifest), "-o", str(folder), "--name", "tiny-flair", "--modality",
                 "FLAIR", "--steps", "400", "--batch-size", "12", "--channels", "8", "16", "32",
                 "--spacing", "4", "--size", "48", "--lr", "3e-3"])
    assert code == 0
    return folder / "tiny-flair.pt"


@pytest.fixture(scope="session")
def ms_flair():
    """The MS patient's skull-stripped FLAIR (LAS), its affine, and a brain mask from its non-zero region."""
    from itermask.io import read_volume

    image, affine = read_volume(MS / "FLAIR.nii.gz")
    return image.astype(np.float32), affine, image != 0


def insert_blob(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, centre_mm, radius_mm: float,
                gain: float = 1.8):
    """A bright spherical anomaly at a RAS position, scaled from the local intensity; returns (image, blob mask)."""
    ijk = np.indices(image.shape).reshape(3, -1).T
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    blob = (np.linalg.norm(ras - np.asarray(centre_mm), axis=1) <= radius_mm).reshape(image.shape) & brain
    bright = np.percentile(image[brain], 95) * gain
    return np.where(blob, bright, image).astype(np.float32), blob


@pytest.fixture()
def mrml_scene():
    """A real slicer-core MRML scene, set up as the Slicer application would (see headless_slicer.py)."""
    from headless_slicer import make_scene

    scene = make_scene()
    yield scene
    scene.Clear(True)
