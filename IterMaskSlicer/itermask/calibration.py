"""Healthy calibration of a bundle's segmentation threshold (never from test labels, METHOD.md).

The threshold must match what it is applied to — the *final* anomaly map of a whole IterMask run, where most healthy
tissue is visible again — so it is a high percentile of the healthy voxels of final anomaly maps of full IterMask²
runs on the calibration scans (their labelled lesions, if any, left out). The same runs give the healthy reference
for the scan-level anomaly score: each calibration scan's final mask volume and mean error, for each policy, counted
over its healthy region only. One-shot methods (baselines, the frequency-only ablation) are calibrated by the same
rule on their one-shot maps.

These are whole runs, so this module sits above :mod:`itermask.session` (which imports the policies, which import
:mod:`itermask.thresholding`): nothing below imports it back.
"""
from __future__ import annotations

import numpy as np

from .bundle import ModelBundle
from .cases import Case, healthy_region, read_case
from .metadata import Calibration, HealthyScan
from .policies import POLICIES
from .preprocess import prepare_volume
from .reconstruction import one_shot_reconstruction
from .session import Session

THRESHOLD_PERCENTILE = 99.0   # segmentation: final-map errors that fewer than 1% of healthy voxels reach


def healthy_threshold(errors: list[np.ndarray]) -> dict:
    """The segmentation threshold from errors of healthy voxels (1D arrays, squared normalised intensity): their
    :data:`THRESHOLD_PERCENTILE`, with the percentile and the number of voxels it came from."""
    errors = np.concatenate(errors)
    return {"threshold": float(np.percentile(errors, THRESHOLD_PERCENTILE)),
            "threshold_percentile": THRESHOLD_PERCENTILE, "threshold_voxels": int(errors.size)}


def calibrate_threshold(bundle: ModelBundle, cases: list[Case], seed: int) -> dict:
    """The segmentation threshold of an IterMask bundle whose τ is already calibrated (from full IterMask² runs on
    the healthy calibration ``cases``: :func:`healthy_threshold` of their final maps' healthy voxels), and
    ``healthy_scans``: each run's scan score, for every policy; the :class:`Calibration` fields they fill."""
    runs = {policy: [_calibration_run(bundle, case, seed, policy) for case in cases] for policy in POLICIES}
    # The calibrated threshold is the fixed-τ policy's; the subject-specific one segments at the subject's τ_stop.
    return dict(healthy_threshold([run["errors"] for run in runs["itermask2"]]),
                healthy_scans={policy: tuple(run["score"] for run in found) for policy, found in runs.items()})


def _calibration_run(bundle: ModelBundle, case: Case, seed: int, policy: str) -> dict:
    """A full run on one calibration scan: the healthy voxels of its final anomaly map, and its scan score (final
    mask ml and mean error) over the healthy region."""
    volumes = read_case(case)
    session = Session(bundle, volumes.image, volumes.affine, volumes.brain, policy=policy, seed=seed, device="cpu")
    session.run()
    healthy = healthy_region(session.prepared, volumes, bundle.dims)
    error = session.current.error[healthy]
    voxel_ml = session.prepared.grid.spacing ** 3 / 1000.0  # on the model grid, as a session's score counts it
    # IterMask3D's τ_stop: the healthy range an absurd subject τ_stop is recognised by
    score = HealthyScan(final_mask_ml=float((session.current.mask & healthy).sum()) * voxel_ml,
                        mean_error=float(error.mean()), tau_stop=float(session.tau) if policy == "itermask3d" else None)
    return {"errors": error.numpy(), "score": score}


def calibrate_one_shot(bundle: ModelBundle, cases: list[Case], seed: int) -> Calibration:
    """The segmentation threshold of a one-shot method — a baseline (AE, DAE) or IterMask's first iteration alone
    (the frequency-only ablation) — by the same rule as IterMask²'s (:func:`healthy_threshold` of the one-shot error
    maps' healthy voxels on the calibration ``cases``), and their mean errors, the healthy reference for scan-level
    scores."""
    errors, scans = [], []
    for case in cases:
        volumes = read_case(case)
        prepared = prepare_volume(volumes.image, volumes.affine, volumes.brain, bundle.metadata.grid,
                                  bundle.grid_divisor)
        error = (one_shot_reconstruction(bundle, prepared, seed) - prepared.image) ** 2
        healthy = error[healthy_region(prepared, volumes, bundle.dims)].numpy()
        errors.append(healthy)
        scans.append(HealthyScan(mean_error=float(healthy.mean())))
    return Calibration(**healthy_threshold(errors), healthy_scans={"one-shot": tuple(scans)},
                       method="threshold: percentile of the healthy voxels of one-shot error maps of the calibration "
                              "scans")
