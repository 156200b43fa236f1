"""Calibration on held-out healthy data: τ and the segmentation threshold (never from test labels, METHOD.md).

τ follows the paper: a percentile of the errors of healthy voxels hidden by random training masks. The
segmentation threshold must match what it is applied to — the *final* anomaly map of a whole IterMask run, where
most healthy tissue is visible again — so it is a high percentile of the healthy voxels of final anomaly maps of
full IterMask² runs on the calibration scans (their labelled lesions, if any, left out).

The same runs give the healthy reference for the scan-level anomaly score (artifact / quality-control use): each
calibration scan's final mask volume and mean error, for each policy, counted over its healthy region only.
"""
from __future__ import annotations

import numpy as np
import torch

from itermask.bundle import ModelBundle
from itermask.policies import POLICIES
from itermask.preprocess import prepare_volume
from itermask.reconstruction import network_input, one_shot_reconstruction
from itermask.session import Session

from .batches import training_batch
from .data import Case, healthy_region, load_training_set, read_case

TAU_PERCENTILE = 80.0         # paper: about the 80th percentile of healthy masked-voxel errors
THRESHOLD_PERCENTILE = 99.0   # segmentation: final-map errors that fewer than 1% of healthy voxels reach
INTENSITY_PERCENTILE = 99.0   # the plain intensity baseline, calibrated the same way


def calibrate(bundle: ModelBundle, cases: list[Case], seed: int, rounds: int = 4) -> dict:
    """τ, the segmentation threshold, the intensity-baseline threshold and the healthy scan scores."""
    tau_part = _hidden_voxel_errors(bundle, cases, seed, rounds)
    # The runs below use the τ just found; the segmentation threshold plays no part in a run, 0 stands in for it.
    bundle.metadata["calibration"] = {"tau": tau_part["tau"], "threshold": 0.0}
    runs = {policy: [_calibration_run(bundle, case, seed, policy) for case in cases]
            for policy in POLICIES}
    # The calibrated threshold is the fixed-τ policy's; the subject-specific one segments at the subject's τ_stop.
    final_errors = np.concatenate([run["errors"] for run in runs["itermask2"]])
    return dict(tau_part, threshold=float(np.percentile(final_errors, THRESHOLD_PERCENTILE)),
                threshold_percentile=THRESHOLD_PERCENTILE, threshold_voxels=int(final_errors.size),
                healthy_scans={policy: [run["score"] for run in found] for policy, found in runs.items()},
                method="tau: percentile of healthy hidden-voxel errors under random training masks; threshold: "
                       "percentile of healthy voxels of final anomaly maps of full IterMask² runs")


def _calibration_run(bundle: ModelBundle, case: Case, seed: int, policy: str) -> dict:
    """A full run on one calibration scan: the healthy voxels of its final anomaly map, and its scan score (final
    mask ml and mean error) over the healthy region."""
    volumes = read_case(case)
    session = Session(bundle, volumes.image, volumes.affine, volumes.brain, policy=policy, seed=seed, device="cpu")
    session.run()
    healthy = healthy_region(session.prepared, volumes, bundle.dims)
    error = session.current.error[healthy]
    voxel_ml = session.prepared.grid.spacing ** 3 / 1000.0
    score = {"final_mask_ml": float((session.current.mask & healthy).sum()) * voxel_ml,
             "mean_error": float(error.mean())}
    if policy == "itermask3d":  # the healthy range an absurd subject τ_stop is recognised by
        score["tau_stop"] = float(session.tau)
    return {"errors": error.numpy(), "score": score}


def calibrate_one_shot(bundle: ModelBundle, cases: list[Case], seed: int) -> dict:
    """The segmentation threshold of a one-shot method — a baseline (AE, DAE) or IterMask's first iteration alone
    (the frequency-only ablation) — by the same rule as IterMask²'s: the ``THRESHOLD_PERCENTILE`` of the errors of
    healthy voxels of the calibration scans; and their mean errors, the healthy reference for scan-level scores."""
    errors, scans = [], []
    for case in cases:
        volumes = read_case(case)
        prepared = prepare_volume(volumes.image, volumes.affine, volumes.brain, bundle.metadata["grid"],
                                  bundle.grid_divisor)
        error = (one_shot_reconstruction(bundle, prepared, seed) - prepared.image) ** 2
        healthy = error[healthy_region(prepared, volumes, bundle.dims)].numpy()
        errors.append(healthy)
        scans.append({"mean_error": float(healthy.mean())})
    errors = np.concatenate(errors)
    return {"threshold": float(np.percentile(errors, THRESHOLD_PERCENTILE)),
            "threshold_percentile": THRESHOLD_PERCENTILE, "threshold_voxels": int(errors.size),
            "healthy_scans": {"one-shot": scans},
            "method": "threshold: percentile of the healthy voxels of one-shot error maps of the calibration scans"}


@torch.inference_mode()
def _hidden_voxel_errors(bundle: ModelBundle, cases: list[Case], seed: int, rounds: int) -> dict:
    """τ from the masked (or unified) model's errors on healthy calibration slices or volumes hidden like in training
    (never wholly); the intensity baseline's threshold from the same data. Each sample gets ``rounds`` fresh masks."""
    role = bundle.masked_role
    net = bundle.networks[role]
    samples = load_training_set(cases, bundle.metadata["grid"], bundle.dims, net.divisor)
    gen = torch.Generator().manual_seed(seed + 1)
    chunk = 32 if bundle.dims == 2 else 1
    errors = []
    for _ in range(rounds):
        batch = training_batch(samples, len(samples), bundle.metadata, gen, index=torch.arange(len(samples)),
                               augment=False, whole_brain_fraction=0.0)
        recon = torch.cat([net(network_input(role, x, f if bundle.uses_frequency else None, h, n))
                           for x, f, h, n in zip(*(batch[k].split(chunk) for k in ("x", "x_f", "hidden", "noise")))])
        counted = batch["hidden"] & batch["valid"]
        errors.append(((recon - batch["x"]) ** 2)[counted].numpy())
    errors = np.concatenate(errors)
    healthy_intensity = samples.image[samples.valid].numpy()
    return {
        "tau": float(np.percentile(errors, TAU_PERCENTILE)), "tau_percentile": TAU_PERCENTILE,
        "intensity_threshold": float(np.percentile(healthy_intensity, INTENSITY_PERCENTILE)),
        "intensity_percentile": INTENSITY_PERCENTILE, "tau_voxels": int(errors.size), "samples": len(samples),
    }
