"""Calibration on held-out healthy data: τ and the segmentation threshold (never from test labels, METHOD.md)."""
from __future__ import annotations

import numpy as np
import torch

from itermask.bundle import ModelBundle
from itermask.reconstruction import network_input

from .batches import training_batch
from .data import Case, load_slices

TAU_PERCENTILE = 80.0         # paper: about the 80th percentile of healthy masked-voxel errors
THRESHOLD_PERCENTILE = 99.0   # segmentation: errors that fewer than 1% of healthy hidden voxels reach
INTENSITY_PERCENTILE = 99.0   # the plain intensity baseline, calibrated the same way


@torch.inference_mode()
def calibrate(bundle: ModelBundle, cases: list[Case], seed: int, rounds: int = 4) -> dict:
    """Errors of the masked model on healthy calibration slices hidden like in training → τ and threshold.

    Each slice is masked ``rounds`` times with fresh random masks; only healthy (non-lesion) hidden voxels count.
    """
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
        "threshold": float(np.percentile(errors, THRESHOLD_PERCENTILE)), "threshold_percentile": THRESHOLD_PERCENTILE,
        "intensity_threshold": float(np.percentile(healthy_intensity, INTENSITY_PERCENTILE)),
        "voxels": int(errors.size), "slices": len(slices),
        "method": "percentiles of squared errors of healthy hidden voxels under random training masks",
    }
