"""Scans with skull: a clear error naming --skull-strip, and ROBEX's mask made and placed by geometry (real scans:
the epilepsy patient's T1 with skull and electrodes, and ROBEX's own mask of it shipped in ../shared/data)."""
from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np

from itermask.io import read_volume, write_nifti
from itermask.preprocess import mask_on_image_grid

from conftest import DATA

HEAD = DATA / "artifacts" / "electrodes_epilepsy"


def _itermask(*args):
    return subprocess.run([sys.executable, "-m", "itermask.cli", *args], capture_output=True, text=True)


def test_a_scan_with_skull_and_no_mask_is_refused_naming_the_option(tmp_path):
    done = _itermask("segment", str(HEAD / "T1.nii.gz"), "--model", "t1-3d", "-o", str(tmp_path))
    assert done.returncode != 0
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("itermask: error:") and "larger than a brain" in line
    assert "--skull-strip" in line and "--skull-strip-from" in line and "--brain-mask" in line


def test_skull_strip_from_a_t1_places_its_mask_on_every_input_by_geometry(tmp_path):
    """The T1 itself and a copy on another grid (cropped, axes reversed, as another sequence of the session would
    be): one ROBEX run serves both, and each mask matches ROBEX's shipped mask placed on that input's grid."""
    image, affine = read_volume(HEAD / "T1.nii.gz")
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = image.shape[0] - 11  # voxel i of the copy is voxel (shape - 11 - i) of the original: same place
    other = image[::-1][10:-10].copy()
    write_nifti(tmp_path / "other.nii.gz", other, affine @ flip)
    done = _itermask("segment", str(HEAD / "T1.nii.gz"), str(tmp_path / "other.nii.gz"), "--model", "t1-3d",
                     "--skull-strip-from", str(HEAD / "T1.nii.gz"), "-o", str(tmp_path / "out"), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    reference, reference_affine = read_volume(HEAD / "T1_brainmask_robex.nii.gz")
    for name in ("T1", "other"):
        written = nib.load(tmp_path / "out" / name / "brain_mask.nii.gz")
        mask = np.asarray(written.dataobj) > 0
        expected = mask_on_image_grid(reference, reference_affine, mask.shape, written.affine) > 0
        dice = 2 * (mask & expected).sum() / (mask.sum() + expected.sum())
        assert dice > 0.97, (name, dice)
        assert nib.load(tmp_path / "out" / name / "mask.nii.gz").shape == mask.shape
