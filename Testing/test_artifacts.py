"""Synthetic artifacts and lesions on a real healthy scan (IXI002 T1) do what they claim, and repeat with a seed."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import DATA
from itermask.io import read_volume
from itermask_evaluation.artifacts import ARTIFACTS, apply_artifact, insert_lesion, missing_chunk


@pytest.fixture(scope="module")
def healthy_t1():
    image, affine = read_volume(DATA / "healthy" / "ixi002" / "T1.nii.gz")
    brain = read_volume(DATA / "healthy" / "ixi002" / "T1_brainmask.nii.gz")[0] > 0.5
    return image.astype(np.float32), brain, affine


def _superior_mm(affine, shape):
    index = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1)
    return (index @ affine[:3, :3].T + affine[:3, 3])[..., 2]


@pytest.mark.parametrize("name", ARTIFACTS)
def test_artifacts_change_the_brain_only_and_repeat_with_a_seed(healthy_t1, name):
    image, brain, affine = healthy_t1
    before = image.copy()
    once = apply_artifact(name, image, brain, affine, seed=3)
    assert np.array_equal(image, before), "the input must not be modified"
    assert once.shape == image.shape and once.dtype == image.dtype
    assert np.array_equal(once[~brain], image[~brain])
    changed = (once != image) & brain
    assert changed.sum() > 0.02 * brain.sum()
    assert np.array_equal(once, apply_artifact(name, image, brain, affine, seed=3))
    if name in ("gaussian_noise", "ring", "periodic_lines"):
        assert not np.array_equal(once, apply_artifact(name, image, brain, affine, seed=4))


def test_gaussian_noise_has_the_requested_strength(healthy_t1):
    image, brain, affine = healthy_t1
    noisy = apply_artifact("gaussian_noise", image, brain, affine)
    added = (noisy - image)[brain]
    assert added.std() == pytest.approx(0.3 * image[brain].std(), rel=0.02)
    assert abs(added.mean()) < 0.01 * image[brain].std()


def test_missing_chunks_blank_the_top_or_the_centre(healthy_t1):
    image, brain, affine = healthy_t1
    air = float(np.median(image[~brain]))
    superior = _superior_mm(affine, image.shape)
    top = missing_chunk(image, brain, affine, "top")
    highest = superior[brain].max()
    assert np.all(top[brain & (superior > highest - 5)] == air)      # the crown is gone
    assert np.array_equal(top[brain & (superior < highest - 60)], image[brain & (superior < highest - 60)])
    middle = missing_chunk(image, brain, affine, "middle")
    centre = tuple(int(np.round(np.mean(ix))) for ix in np.nonzero(brain))
    assert middle[centre] == air and middle[brain & (superior > highest - 5)].std() > 0


def test_periodic_lines_repeat_every_period(healthy_t1):
    image, brain, affine = healthy_t1
    added = apply_artifact("periodic_lines", image, brain, affine, seed=1) - image
    sd = image[brain].std()
    assert np.abs(added[brain]).max() == pytest.approx(0.7 * sd, rel=0.05)
    # In any row along a voxel axis the stripes come back: the pattern is a sinusoid, not noise.
    row = added[75, :, 128][brain[75, :, 128]]
    spectrum = np.abs(np.fft.rfft(row - row.mean()))
    assert spectrum.max() > 5 * np.median(spectrum)


@pytest.mark.parametrize("kind, sign", [("hyper", 1), ("hypo", -1)])
def test_inserted_lesions_have_exact_masks_inside_the_brain(healthy_t1, kind, sign):
    image, brain, affine = healthy_t1
    lesioned, mask = insert_lesion(image, brain, affine, seed=5, kind=kind)
    assert mask.any() and not (mask & ~brain).any()
    assert np.array_equal(lesioned != image, mask), "the mask is exactly the changed voxels"
    shift = (lesioned - image)[mask]
    assert np.allclose(shift, sign * 2.5 * image[brain].std(), rtol=1e-3)
    volume_ml = mask.sum() * abs(np.linalg.det(affine[:3, :3])) / 1000
    assert 1.0 < volume_ml < 4 / 3 * np.pi * (1.4 * 12) ** 3 / 1000
    again, again_mask = insert_lesion(image, brain, affine, seed=5, kind=kind)
    assert np.array_equal(again, lesioned) and np.array_equal(again_mask, mask)
    assert not np.array_equal(insert_lesion(image, brain, affine, seed=6, kind=kind)[1], mask)


def test_a_lesion_too_large_for_the_brain_is_refused(healthy_t1):
    image, brain, affine = healthy_t1
    with pytest.raises(ValueError, match="no place in the brain"):
        insert_lesion(image, brain, affine, radius_mm=90)
