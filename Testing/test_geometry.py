"""Model-grid resampling and its inverse on real scans in LPS, LAS, oblique and anisotropic geometry."""
import numpy as np
import pytest
import torch

from itermask.geometry import ModelGrid
from itermask.io import read_volume
from itermask.metadata import Grid
from itermask.preprocess import prepare_volume

from conftest import MS, brats

GRID = Grid(spacing_mm=2.0, min_size=(1, 96, 96))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def oblique(affine: np.ndarray, degrees: float = 17.0) -> np.ndarray:
    t = np.deg2rad(degrees)
    rot = np.array([[1, 0, 0, 0], [0, np.cos(t), -np.sin(t), 0], [0, np.sin(t), np.cos(t), 0], [0, 0, 0, 1]])
    return rot @ affine


def anisotropic(affine: np.ndarray) -> np.ndarray:
    return affine @ np.diag([0.8, 1.1, 2.5, 1.0])


def real_brains():
    from nilearn.datasets import load_mni152_brain_mask

    brain_lps, aff_lps = read_volume(brats("0003", "brainmask"))
    flair_las, aff_las = read_volume(MS / "FLAIR.nii.gz")
    mni = load_mni152_brain_mask(resolution=1)  # the real MNI152 mask shipped in the nilearn wheel, RAS
    return {"LPS": (brain_lps > 0.5, aff_lps), "LAS": (flair_las != 0, aff_las),
            "RAS": (mni.get_fdata() > 0.5, mni.affine),
            "oblique": (brain_lps > 0.5, oblique(aff_lps)), "anisotropic": (flair_las != 0, anisotropic(aff_las))}


@pytest.mark.parametrize("name", ["LPS", "LAS", "RAS", "oblique", "anisotropic"])
def test_a_lesion_comes_back_on_the_voxels_it_came_from(name):
    brain, affine = real_brains()[name]
    lesion = np.zeros_like(brain)
    centre = np.array(brain.shape) // 2
    lesion[tuple(slice(c - 12, c + 12) for c in centre)] = True
    grid = ModelGrid.around(brain, affine, 2.0, (1, 96, 96), (1, 16, 16))
    back = grid.to_input(grid.from_input(lesion, affine), affine, brain.shape).numpy() >= 0.5
    assert back.shape == brain.shape
    assert dice(back, lesion) > 0.85  # a 2 mm grid blurs the edge of a 24-voxel cube by at most a voxel


def test_flipping_the_array_and_its_affine_describes_the_same_scan():
    image, affine = read_volume(brats("0004"))
    brain = read_volume(brats("0004", "brainmask"))[0] > 0.5
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = image.shape[0] - 1
    a = prepare_volume(image, affine, brain, GRID, (1, 16, 16))
    b = prepare_volume(image[::-1].copy(), affine @ flip, brain[::-1].copy(), GRID, (1, 16, 16))
    assert a.grid == b.grid
    # Voxels exactly half inside the brain may round either way; everything else must agree.
    assert (a.brain != b.brain).sum() < 0.002 * a.brain.sum()
    both = a.brain & b.brain
    assert torch.allclose(a.image[both], b.image[both], atol=1e-2)


def test_model_grid_is_axial_ras_and_covers_the_brain():
    brain, affine = real_brains()["oblique"]
    prepared = prepare_volume(brain.astype(np.float32), affine, brain, GRID, (1, 16, 16))
    assert prepared.grid.shape[1] % 16 == 0 and prepared.grid.shape[2] % 16 == 0
    # Every brain voxel of the input maps back inside the model grid's brain.
    back = prepared.mask_to_input(prepared.brain)
    assert back[brain].mean() > 0.97


def test_the_cached_brain_box_sampler_equals_a_full_resampling():
    brain, affine = real_brains()["oblique"]
    prepared = prepare_volume(brain.astype(np.float32), affine, brain, GRID, (1, 16, 16))
    smooth = torch.linspace(0, 1, prepared.brain.numel()).reshape(prepared.brain.shape)
    full = prepared.grid.to_input(smooth, affine, brain.shape).numpy()
    assert np.allclose(prepared.map_to_input(smooth), np.where(brain, full, 0), atol=1e-4)
