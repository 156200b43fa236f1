"""Calibration on held-out healthy data: τ and the segmentation threshold (never from test labels, METHOD.md).

τ follows the paper: a percentile of the errors of healthy voxels hidden by random training masks. The
segmentation threshold must match what it is applied to — the *final* anomaly map of a whole IterMask run, where
most healthy tissue is visible again — so it is a high percentile of the healthy voxels of final anomaly maps of
full runs on the calibration scans (their labelled lesions, if any, left out).
"""
from __future__ import annotations

import numpy as np
import torch

from itermask.bundle import ModelBundle
from itermask.reconstruction import network_input
from itermask.session import Session

from .batches import training_batch
from .data import Case, healthy_region, load_slices, read_case

TAU_PERCENTILE = 80.0         # paper: about the 80th percentile of healthy masked-voxel errors
THRESHOLD_PERCENTILE = 99.0   # segmentation: final-map errors that fewer than 1% of healthy voxels reach
INTENSITY_PERCENTILE = 99.0   # the plain intensity baseline, calibrated the same way


def calibrate(bundle: ModelBundle, cases: list[Case], seed: int, rounds: int = 4) -> dict:
    """τ, the segmentation threshold and the intensity-baseline threshold from healthy calibration data."""
    tau_part = _hidden_voxel_errors(bundle, cases, seed, rounds)
    final_errors = _final_map_errors(bundle, cases, seed, tau_part["tau"])
    return dict(tau_part, threshold=float(np.percentile(final_errors, THRESHOLD_PERCENTILE)),
                threshold_percentile=THRESHOLD_PERCENTILE, threshold_voxels=int(final_errors.size),
                method="tau: percentile of healthy hidden-voxel errors under random training masks; threshold: "
                       "percentile of healthy voxels of final anomaly maps of full IterMask² runs")


def _final_map_errors(bundle: ModelBundle, cases: list[Case], seed: int, tau: float) -> np.ndarray:
    """Healthy-voxel values of the final anomaly maps of full runs (fixed-τ policy) on each calibration scan."""
    errors = []
    for case in cases:
        volumes = read_case(case)
        # The segmentation threshold plays no part in the run; 0 stands in until it is known.
        session = Session(bundle, volumes.image, volumes.affine, volumes.brain, seed=seed, device="cpu", tau=tau,
                          threshold=0.0)
        session.run()
        errors.append(session.current.error[healthy_region(session.prepared, volumes)].numpy())
    return np.concatenate(errors)


@torch.inference_mode()
def _hidden_voxel_errors(bundle: ModelBundle, cases: list[Case], seed: int, rounds: int) -> dict:
    """τ from the masked model's errors on healthy calibration slices hidden like in training; the intensity
    baseline's threshold from the same slices. Each slice gets ``rounds`` fresh random masks."""
    net = bundle.networks["masked"]
    slices = load_slices(cases, bundle.metadata["grid"], net.divisor)
    gen = torch.Generator().manual_seed(seed + 1)
    errors = []
    for _ in range(rounds):
        batch = training_batch(slices, len(slices), bundle.metadata, gen, index=torch.arange(len(slices)),
                               augment=False)
        recon = torch.cat([net(network_input("masked", x, f, h, n))
                           for x, f, h, n in zip(*(batch[k].split(32) for k in ("x", "x_f", "hidden", "noise")))])
        counted = batch["hidden"] & batch["valid"]
        errors.append(((recon - batch["x"]) ** 2)[counted].numpy())
    errors = np.concatenate(errors)
    healthy_intensity = slices.image[slices.valid].numpy()
    return {
        "tau": float(np.percentile(errors, TAU_PERCENTILE)), "tau_percentile": TAU_PERCENTILE,
        "intensity_threshold": float(np.percentile(healthy_intensity, INTENSITY_PERCENTILE)),
        "intensity_percentile": INTENSITY_PERCENTILE, "tau_voxels": int(errors.size), "slices": len(slices),
    }
