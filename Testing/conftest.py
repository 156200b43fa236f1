"""Shared fixtures: real MRI from ../shared/data and a tiny model trained here on real healthy slices."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from itermask_evaluation.artifacts import voxel_ras_mm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "IterMaskSlicer"))  # the Slicer module folder: IterMaskSlicerLib, as Slicer sees it
DATA = REPO.parent / "shared" / "data"
BRATS = DATA / "brats2013"
MS = DATA / "ms_lesjak2017" / "patient26"
LAUNCHER_KIT = REPO.parent / "shared" / "vendor" / "ctkapplauncher"



def brats(case: str, name: str = "Flair_subtrMeanDivStd") -> Path:
    return BRATS / f"brats_2013_pat{case}_1" / f"{name}.nii.gz"


def _train_tiny(folder: Path, name: str, *settings: str) -> Path:
    """Train through the real ``itermask train`` command on tumour-free parts of BraTS FLAIR pat0003 and pat0004,
    calibrated on pat0005, so every test that uses the model exercises the shipped code path."""
    from itermask.cli import main

    rows = ["image,brain_mask,lesion_mask,split"]
    for case, split in (("0003", "train"), ("0004", "train"), ("0005", "calibration")):
        rows.append(f"{brats(case)},{brats(case, 'brainmask')},{brats(case, 'OTMultiClass')},{split}")
    manifest = folder / "cases.csv"
    manifest.write_text("\n".join(rows) + "\n")
    assert main(["train", "--data", str(manifest), "-o", str(folder), "--name", name, "--modality", "FLAIR",
                 "--spacing", "4", *settings]) == 0
    return folder / f"{name}.pt"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small 2D IterMask² model pair; a 4 mm grid and narrow channels keep it to about a minute on two cores."""
    return _train_tiny(tmp_path_factory.mktemp("tiny_model"), "tiny-flair", "--steps", "400", "--batch-size", "12",
                       "--channels", "8", "16", "32", "--size", "48", "--lr", "3e-3")


@pytest.fixture(scope="session")
def tiny_model_3d(tmp_path_factory) -> Path:
    """A small unified 3D IterMask3D model on whole volumes at 4 mm (about a minute on two cores)."""
    return _train_tiny(tmp_path_factory.mktemp("tiny_model_3d"), "tiny-flair-3d", "--dims", "3", "--steps", "150",
                       "--batch-size", "2", "--channels", "8", "16", "32", "--size", "32", "--lr", "3e-3")


@pytest.fixture(params=["tiny_model", "tiny_model_3d"], ids=["2d", "3d"])
def either_model(request) -> Path:
    """Each tiny model in turn, for behaviour that 2D (IterMask²) and 3D (IterMask3D) bundles share."""
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def ms_flair():
    """The MS patient's skull-stripped FLAIR (LAS), its affine, and a brain mask from its non-zero region."""
    from itermask.io import read_volume

    image, affine = read_volume(MS / "FLAIR.nii.gz")
    return image.astype(np.float32), affine, image != 0


@pytest.fixture(scope="session")
def scan(ms_flair):
    """The MS FLAIR with a 14 mm bright sphere inserted in right-hemisphere white matter: (image, affine, brain, blob)."""
    image, affine, brain = ms_flair
    image, blob = insert_blob(image, brain, affine, (30.0, -20.0, 20.0), 14.0)
    return image, affine, brain, blob


def insert_blob(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, centre_mm, radius_mm: float,
                gain: float = 1.8):
    """A bright spherical anomaly at a RAS position, scaled from the local intensity; returns (image, blob mask)."""
    blob = (np.linalg.norm(voxel_ras_mm(image.shape, affine) - np.asarray(centre_mm), axis=-1) <= radius_mm) & brain
    bright = np.percentile(image[brain], 95) * gain
    return np.where(blob, bright, image).astype(np.float32), blob


@pytest.fixture()
def mrml_scene():
    """A real slicer-core MRML scene, set up as the Slicer application would (see headless_slicer.py)."""
    from headless_slicer import make_scene

    scene = make_scene()
    yield scene
    scene.Clear(True)


@pytest.fixture(scope="session")
def python_slicer() -> Path:
    """The folder of a real ``PythonSlicer``: CTKAppLauncher 0.1.34 (the launcher Slicer 5.10 ships) built from
    source and laid out as Slicer lays it out, its ``python-real`` being this test's interpreter. Built once into
    ``build/`` (about 15 s; the kit installs cmake, g++ and Qt5 with apt-get when run as root, as in CI)."""
    built = subprocess.run([str(LAUNCHER_KIT / "make_python_slicer.sh"), str(REPO / "build" / "pythonslicer"),
                            sys.executable], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"could not build Slicer's PythonSlicer launcher: {built.stderr.strip()}")
    return Path(built.stdout.strip().splitlines()[-1]).parent


@pytest.fixture(scope="session")
def slicer_path(python_slicer):
    """PythonSlicer on PATH for the whole session, as inside Slicer: every worker started from then on runs through
    Slicer's launcher (launcher → python-real)."""
    before = os.environ["PATH"]
    os.environ["PATH"] = f"{python_slicer}{os.pathsep}{before}"
    yield python_slicer
    os.environ["PATH"] = before
