"""Calibration of a trained bundle on held-out healthy cases (never from test labels, METHOD.md).

τ follows the paper: a percentile of the errors of healthy voxels hidden by random *training* masks, which is why it
is calibrated here, beside the masks; the intensity baseline's threshold comes from the same healthy voxels. The
segmentation threshold and the healthy scan scores are the core's (:mod:`itermask.thresholding`).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from itermask.bundle import ModelBundle
from itermask.cases import Case, as_listed
from itermask.metadata import Calibration
from itermask.reconstruction import network_input
from itermask.calibration import calibrate_one_shot, calibrate_threshold

from .batches import training_batch
from .data import load_training_set

TAU_PERCENTILE = 80.0         # paper: about the 80th percentile of healthy masked-voxel errors
INTENSITY_PERCENTILE = 99.0   # the plain intensity baseline, calibrated like the segmentation threshold


def recalibrate(bundle: ModelBundle, cases: list[Case], source: str | Path, seed: int) -> ModelBundle:
    """``bundle`` with its ``calibration`` measured on the healthy ``cases`` (:func:`calibrate` for an IterMask bundle,
    the one-shot threshold for an AE/DAE baseline) and their paths, as ``source`` (the manifest or folder) lists
    them, recorded as its ``training.calibration_data``."""
    calibration = (calibrate if bundle.method == "itermask" else calibrate_one_shot)(bundle, cases, seed)
    training = dict(bundle.metadata.training or {}, calibration_data=[as_listed(c.image, source) for c in cases])
    bundle.metadata = replace(bundle.metadata, calibration=calibration, training=training)
    return bundle


def calibrate(bundle: ModelBundle, cases: list[Case], seed: int, rounds: int = 4) -> Calibration:
    """τ, the segmentation threshold, the intensity-baseline threshold and the healthy scan scores. Leaves
    ``bundle`` with the τ found and a threshold of 0, which :func:`recalibrate` replaces."""
    tau_part = _hidden_voxel_errors(bundle, cases, seed, rounds)
    # The runs below use the τ just found; the segmentation threshold plays no part in a run, 0 stands in for it.
    bundle.metadata = replace(bundle.metadata, calibration=Calibration(tau=tau_part["tau"], threshold=0.0))
    return Calibration(**tau_part, **calibrate_threshold(bundle, cases, seed),
                       method="tau: percentile of healthy hidden-voxel errors under random training masks; threshold: "
                              "percentile of healthy voxels of final anomaly maps of full IterMask² runs")


@torch.inference_mode()
def _hidden_voxel_errors(bundle: ModelBundle, cases: list[Case], seed: int, rounds: int) -> dict:
    """τ from the masked (or unified) model's errors on healthy calibration slices or volumes hidden like in training
    (never wholly); the intensity baseline's threshold from the same data. Each sample gets ``rounds`` fresh masks."""
    role = bundle.masked_role
    net = bundle.networks[role]
    samples = load_training_set(cases, bundle.metadata.grid, bundle.dims, net.divisor)
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
