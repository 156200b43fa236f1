"""The segmentation clean-up (itermask.postprocess) on real MRI, against scipy's reference implementations."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from itermask._shared import voxel_spacing
from itermask.io import read_volume
from itermask.postprocess import PostProcess, inner_brain, median_filtered, without_small_components

from conftest import MS


@pytest.fixture(scope="module")
def ms_patch():
    """A block of the MS patient's FLAIR and its lesion label (1 mm), where small lesions lie."""
    image, affine = read_volume(MS / "FLAIR.nii.gz")
    lesion = read_volume(MS / "lesion_mask.nii.gz")[0] > 0
    centre = [int(np.median(i)) for i in np.nonzero(lesion)]
    box = tuple(slice(c - 30, c + 30) for c in centre)
    return image[box].astype(np.float32), lesion[box], voxel_spacing(affine)


def test_median_filter_is_scipys_3_voxel_median_and_skips_thick_slices(ms_patch):
    image, _, spacing = ms_patch
    assert np.array_equal(median_filtered(image, spacing), ndimage.median_filter(image, 3, mode="nearest"))
    thick = median_filtered(image, (1.0, 1.0, 7.0))  # no neighbours across 7 mm slices
    assert np.array_equal(thick, ndimage.median_filter(image, (3, 3, 1), mode="nearest"))
    z = (image - image.mean()) / image.std()  # negative values: every voxel's median is computed
    assert np.array_equal(median_filtered(z, spacing), ndimage.median_filter(z, 3, mode="nearest"))
    sparse = np.where(z > 1.5, z, 0).astype(np.float32)  # mostly zero, as a hyperintense map: most medians are zero
    assert np.array_equal(median_filtered(sparse, spacing), ndimage.median_filter(sparse, 3, mode="nearest"))
    for thick_axis in range(3):  # the nonzero neighbours counted without the thick axis too
        size, mm = [3, 3, 3], [1.0, 1.0, 1.0]
        size[thick_axis], mm[thick_axis] = 1, 7.0
        assert np.array_equal(median_filtered(sparse, mm), ndimage.median_filter(sparse, size, mode="nearest"))


def test_small_clusters_are_dropped_exactly_as_26_connected_labelling_says(ms_patch):
    image, _, _ = ms_patch
    mask = image > np.percentile(image[image > 0], 97)  # the brightest voxels: lesions, vessels, speckle
    labels, _ = ndimage.label(mask, np.ones((3, 3, 3), bool))
    sizes = np.bincount(labels.ravel())
    for smallest in (2, 10, 50):
        expected = (sizes >= smallest)[labels] & mask
        assert np.array_equal(without_small_components(mask, smallest), expected)
    assert not without_small_components(np.zeros((4, 4, 4), bool), 3).any()


def test_the_rim_removed_is_the_brain_within_that_distance_of_its_edge():
    image, affine = read_volume(MS / "FLAIR.nii.gz")
    brain = image[::2, ::2, ::2] > 0  # every other voxel: a 2 mm brain with its real outline
    inner = inner_brain(brain, 6.0, 2 * np.array(voxel_spacing(affine)))
    # Chebyshev (box) distance to the nearest voxel outside the brain, in voxels of 1 mm.
    distance = ndimage.distance_transform_cdt(np.pad(brain, 1), metric="chessboard")[1:-1, 1:-1, 1:-1]
    assert np.array_equal(inner, distance > 3)
    assert np.array_equal(inner_brain(brain, 0.0, (1, 1, 1)), brain)


def test_a_clean_up_segments_inside_the_brain_only_and_describes_itself(ms_patch):
    image, lesion, spacing = ms_patch
    brain = image > 0
    z = (image - image[brain].mean()) / image[brain].std()
    post = PostProcess(median=True, rim_mm=2.0, min_component_ml=0.01)
    mask = post.segment(z, 2.0, brain, spacing)
    assert mask.shape == z.shape and not (mask & ~brain).any()
    plain = PostProcess().segment(z, 2.0, brain, spacing)
    assert np.array_equal(plain, (z > 2.0) & brain) and mask.sum() < plain.sum()
    assert post.describe() == "median, 2 mm rim, clusters ≥ 0.01 ml" and PostProcess().describe() == "none"
    with pytest.raises(Exception, match="rim_mm must not be negative"):
        PostProcess(rim_mm=-1.0)


def test_docstring_examples():
    import doctest

    from itermask import postprocess

    assert doctest.testmod(postprocess).failed == 0
