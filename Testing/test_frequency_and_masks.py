"""Frequency masking and random training masks, on real slices where it matters."""
import numpy as np
import pytest
import torch

from itermask.frequency import high_frequency
from itermask.io import read_volume
from itermask_training.masks import gaussian_cloud_masks_3d, gaussian_patch_masks, random_rotation_3d

from conftest import brats


def test_high_frequency_removes_the_low_band_and_keeps_the_high():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    low = torch.cos(2 * np.pi * 2 * x / 64)      # 2 cycles: inside a radius-8 disc
    high = torch.cos(2 * np.pi * 20 * y / 64)    # 20 cycles: outside it
    out = high_frequency((low + high)[None, None], radius=8, spatial_dims=2)[0, 0]
    assert torch.allclose(out, high, atol=1e-4)


def test_high_frequency_is_batched_and_works_in_3d():
    x = torch.randn(5, 1, 32, 32)
    batched = high_frequency(x, 6, 2)
    one_by_one = torch.cat([high_frequency(x[i:i + 1], 6, 2) for i in range(5)])
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    volume = torch.randn(1, 1, 16, 16, 16)
    assert abs(float(high_frequency(volume, 3, 3).mean())) < 1e-5  # zero frequency removed


def test_radius_is_in_reference_grid_units():
    # The same physical frequency band goes on a grid twice as large when the radius refers to the smaller grid.
    x, _ = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    wave = torch.cos(2 * np.pi * 12 * x / 64)[None, None]  # 6 cycles per 32 voxels
    assert float(high_frequency(wave, 8, 2, reference_size=32).abs().max()) < 1e-4


def test_masks_stay_in_the_brain_differ_every_call_and_repeat_with_a_seed():
    image, _ = read_volume(brats("0003", "brainmask"))
    brain = torch.from_numpy(np.ascontiguousarray(image[:, :, 60:64].transpose(2, 0, 1) > 0.5))
    gen = torch.Generator().manual_seed(1)
    first, second = gaussian_patch_masks(brain, gen), gaussian_patch_masks(brain, gen)
    again = gaussian_patch_masks(brain, torch.Generator().manual_seed(1))
    assert not (first & ~brain).any()
    assert first.any() and not torch.equal(first, second)
    assert torch.equal(first, again)
    assert not gaussian_patch_masks(torch.zeros(1, 32, 32, dtype=torch.bool), gen).any()


def test_patch_positions_follow_a_joint_rotated_gaussian():
    # A correlated (rotated) cluster is only possible when rows and columns are drawn jointly.
    brain = torch.ones(400, 128, 128, dtype=torch.bool)
    masks = gaussian_patch_masks(brain, torch.Generator().manual_seed(0), patches=300, sides=(1,), coarse=4.0)
    rng = np.random.default_rng(0)
    joint, independent = [], []
    for m in masks:
        rows, cols = (v.numpy() for v in m.nonzero(as_tuple=True))
        if len(rows) > 50:
            joint.append(abs(np.corrcoef(rows, cols)[0, 1]))
            independent.append(abs(np.corrcoef(rows, rng.permutation(cols))[0, 1]))  # the reference code's bug
    assert np.median(joint) > 0.1 > 2 * np.median(independent)


def test_3d_masks_stay_in_the_brain_and_repeat_with_a_seed():
    image, _ = read_volume(brats("0003", "brainmask"))
    brain = torch.from_numpy(np.ascontiguousarray(image[::4, ::4, ::4] > 0.5))[None]
    gen = torch.Generator().manual_seed(2)
    first, second = gaussian_cloud_masks_3d(brain, gen), gaussian_cloud_masks_3d(brain, gen)
    assert not (first & ~brain).any() and first.any() and not torch.equal(first, second)
    assert torch.equal(first, gaussian_cloud_masks_3d(brain, torch.Generator().manual_seed(2)))


def test_3d_masks_never_wrap_around_the_volume():
    # Brain in two opposite corners: a cloud centred in one corner can reach the other only by wrapping around.
    brain = torch.zeros(1, 40, 40, 40, dtype=torch.bool)
    brain[0, :4, :4, :4] = brain[0, -4:, -4:, -4:] = True
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        mask = gaussian_cloud_masks_3d(brain, gen, points=2000, cells=(1.0,))[0]
        assert not (mask[:4, :4, :4].any() and mask[-4:, -4:, -4:].any())


def test_3d_masks_are_made_of_whole_coarse_cells():
    brain = torch.ones(1, 32, 32, 32, dtype=torch.bool)
    mask = gaussian_cloud_masks_3d(brain, torch.Generator().manual_seed(3), points=3000, cells=(4.0,))[0]
    blocks = mask.reshape(8, 4, 8, 4, 8, 4).permute(0, 2, 4, 1, 3, 5).reshape(512, 64)
    assert mask.any() and (blocks.all(dim=1) | ~blocks.any(dim=1)).all()


def test_3d_rotations_are_proper():
    rot = random_rotation_3d(torch.Generator().manual_seed(4))
    assert torch.allclose(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert float(torch.det(rot)) == pytest.approx(1.0)
