"""Augmentation of real training samples: deformations keep the brain a brain, intensity changes keep the
preprocessing's z-scoring and the tissue order, everything is reproducible from a seed."""
from __future__ import annotations

import pytest
import torch

from itermask.cases import Case
from itermask.metadata import Grid
from itermask_training.augment import (Augmentation, random_augmentation, random_deformation, random_intensity,
                                       smooth_random_field)
from itermask_training.data import load_training_set

from conftest import MS

STILL = Augmentation(rotate_deg=0, scale=0, shift_mm=0, elastic_sd_mm=0, bias_sd=0, gamma_log=0, noise_sd=0)


@pytest.fixture(scope="module", params=[2, 3], ids=["slices", "volume"])
def samples(request):
    """The MS patient's FLAIR on a 6 mm grid: its brain slices (2D) or the whole volume (3D)."""
    dims = request.param
    case = Case(MS / "FLAIR.nii.gz", None, MS / "lesion_mask.nii.gz", "train")
    grid = Grid(spacing_mm=6.0, min_size=(1, 32, 32) if dims == 2 else (32, 32, 32))
    found = load_training_set([case], grid, dims, divisor=4, min_brain_pixels=100)
    return found.image[:4], found.brain[:4], found.valid[:4]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_a_deformation_of_zero_strength_is_the_identity(samples):
    x, brain, valid = samples
    moved, moved_brain, moved_valid = random_deformation(x, brain, valid, gen(), 6.0, STILL)
    assert torch.allclose(moved, x, atol=1e-5)
    assert torch.equal(moved_brain, brain) and torch.equal(moved_valid, valid)


def test_a_deformation_moves_the_brain_a_little_and_keeps_the_masks_consistent(samples):
    x, brain, valid = samples
    moved, moved_brain, moved_valid = random_deformation(x, brain, valid, gen(), 6.0)
    assert not torch.equal(moved_brain, brain)
    assert (moved_valid <= moved_brain).all() and (moved[~moved_brain] == 0).all()
    # Zoom ≤ 8 % per axis and smooth displacements: the brain keeps its size within (1 ± 0.08)^dims and a margin.
    ratio = moved_brain.sum() / brain.sum()
    dims = x.dim() - 1
    assert 0.92 ** dims * 0.9 < ratio < 1.08 ** dims * 1.1


def test_intensity_changes_keep_the_z_scoring_and_the_tissue_order(samples):
    x, brain, _ = samples
    changed = random_intensity(x, brain, gen(), 6.0)
    assert (changed[~brain] == 0).all() and not torch.allclose(changed, x)
    inliers = changed[brain][changed[brain].abs() < 2]
    assert abs(inliers.mean()) < 0.3 and 0.6 < inliers.std() < 1.2
    # A gamma change alone is monotonic: brighter stays brighter (above the 1st percentile, where it is not clipped).
    gamma_only = Augmentation(bias_sd=0, noise_sd=0, gamma_log=0.3)
    for before, after, inside in zip(x, random_intensity(x, brain, gen(1), 6.0, gamma_only), brain):
        order = before[inside].argsort()
        kept = before[inside][order] > before[inside].quantile(0.01)
        assert (after[inside][order][kept].diff() >= -1e-5).all()


def test_augmentation_is_reproducible_from_the_seed(samples):
    first = random_augmentation(*samples, gen(3), 6.0)
    again = random_augmentation(*samples, gen(3), 6.0)
    other = random_augmentation(*samples, gen(4), 6.0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_a_smooth_random_field_is_smooth_with_about_the_requested_sd():
    field = smooth_random_field((2, 1, 64, 64, 64), cell_px=8, sd=0.5, gen=gen())
    assert field.shape == (2, 1, 64, 64, 64)
    assert 0.25 < field.std() < 0.55
    neighbours = torch.corrcoef(torch.stack([field[..., :-1].flatten(), field[..., 1:].flatten()]))[0, 1]
    assert neighbours > 0.9
