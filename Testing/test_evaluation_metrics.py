"""Evaluation metrics against values worked out by hand on small arrays (METHOD.md's definitions)."""
from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from itermask_evaluation import figures, metrics, report
from itermask_evaluation.metrics import (detection_metrics, reconstruction_quality, segmentation_metrics,
                                         voxel_ranking_metrics)
from itermask_evaluation.report import oracle_dice


@pytest.mark.parametrize("module", [metrics, report, figures])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0


def test_overlap_metrics_of_two_shifted_boxes():
    truth = np.zeros((6, 6, 6), bool)
    truth[1:4, 1:4, 1:4] = True                   # 27 voxels
    prediction = np.roll(truth, 1, axis=0)        # 18 shared, 9 false positives, 9 missed
    m = segmentation_metrics(prediction, truth)
    assert m["dice"] == pytest.approx(2 * 18 / 54)
    assert m["jaccard"] == pytest.approx(18 / 36)
    assert m["sensitivity"] == pytest.approx(18 / 27)
    assert m["precision"] == pytest.approx(18 / 27)


def test_assd_is_a_surface_distance_in_mm():
    a = np.zeros((9, 3, 3), bool)
    b = a.copy()
    a[1, 1, 1] = True
    b[4, 1, 1] = True                              # 3 voxels apart along an axis of 2 mm voxels
    assert segmentation_metrics(a, b, (2.0, 1.0, 1.0))["assd_mm"] == pytest.approx(6.0)
    # A solid 5³ cube against itself minus its surface layer: surfaces one voxel apart everywhere on the inner
    # surface, and 98 outer-surface voxels at distance 1 (faces), √2 (edges) or √3 (corners) from it.
    cube = np.zeros((9, 9, 9), bool)
    cube[2:7, 2:7, 2:7] = True
    inner = np.zeros_like(cube)
    inner[3:6, 3:6, 3:6] = True
    # outer surface: 54 face voxels at 1, 36 edge voxels at √2, 8 corners at √3; inner surface (26 voxels, the
    # centre is not on it): 26 voxels each at 1 from the outer surface.
    expected = (54 * 1 + 36 * math.sqrt(2) + 8 * math.sqrt(3) + 26 * 1) / (98 + 26)
    assert segmentation_metrics(cube, inner)["assd_mm"] == pytest.approx(expected)


def test_undefined_ratios_are_nan_not_a_flattering_number():
    truth = np.zeros((4, 4, 4), bool)
    truth[1, 1, 1] = True
    m = segmentation_metrics(np.zeros_like(truth), truth)
    assert m["dice"] == 0.0 and m["sensitivity"] == 0.0
    assert math.isnan(m["precision"]) and math.isnan(m["assd_mm"])


def test_voxel_ranking_counts_the_brain_only():
    score = np.array([0.0, 0.0, 0.0, 0.1, 0.4, 0.35, 0.8])
    truth = np.array([0, 0, 0, 0, 0, 1, 1], bool)
    brain = np.array([0, 0, 0, 1, 1, 1, 1], bool)
    inside = voxel_ranking_metrics(score, truth, brain)
    everywhere = voxel_ranking_metrics(score, truth, np.ones(7, bool))
    assert inside["auroc"] == pytest.approx(3 / 4)          # (0.35 > 0.1) + (0.8 > 0.1) + (0.8 > 0.4) of 4 pairs
    assert everywhere["auroc"] == pytest.approx(9 / 10)     # the background inflates it, hence brain only
    assert inside["auprc"] == pytest.approx((1 + 2 / 3) / 2)


def test_reconstruction_quality_ignores_the_lesion():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(12, 12, 12))
    healthy = np.ones(image.shape, bool)
    healthy[4:8, 4:8, 4:8] = False
    recon = image.copy()
    recon[~healthy] += 5.0                         # a lesion the model did not reproduce: not counted
    q = reconstruction_quality(image, recon, healthy)
    assert q["psnr_db"] == math.inf and q["ssim"] == pytest.approx(1.0)
    recon[healthy] += 0.5
    span = image[healthy].max() - image[healthy].min()
    assert reconstruction_quality(image, recon, healthy)["psnr_db"] == pytest.approx(10 * math.log10(span ** 2 / 0.25))
    assert reconstruction_quality(image, recon, healthy)["ssim"] < 1.0


def test_detection_rates_follow_table_1():
    perfect = detection_metrics([1, 2, 3], [4, 5, 6])
    assert perfect == {"auroc": 1.0, "auprc": 1.0, "fpr80": 0.0, "fpr90": 0.0, "fnr80": 0.0, "fnr90": 0.0}
    # 10 normals 1..10; anomalies 5.5 and 20: accepting 8 normals (≤ 8) also accepts the anomaly at 5.5.
    m = detection_metrics(np.arange(1, 11), [5.5, 20])
    assert m["fpr80"] == 0.5 and m["fpr90"] == 0.5
    # Flagging 80 % of the two anomalies means flagging both (≥ 5.5), which flags normals 6..10.
    assert m["fnr80"] == 0.5 and m["fnr90"] == 0.5
    assert m["auroc"] == pytest.approx((5 + 10) / 20)


def test_oracle_dice_matches_a_brute_force_search():
    rng = np.random.default_rng(1)
    truth = rng.random((10, 10, 10)) < 0.1
    score = truth * 0.5 + rng.random(truth.shape)
    brain = np.ones(truth.shape, bool)
    thresholds = np.unique(np.quantile(score, np.linspace(0.0, 0.9999, 200)))
    brute = max(segmentation_metrics(score > t, truth)["dice"] for t in thresholds)
    assert oracle_dice(score, truth, brain) == pytest.approx(brute)
