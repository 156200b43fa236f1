"""The methods an evaluation compares, each run on one case with the threshold it would have in practice.

- :class:`IterMask`: a bundle with a policy — IterMask² (``itermask2``, calibrated τ and threshold), or the
  subject-specific policy (``itermask3d``: IterMask3D with a 3D bundle, "IterMask² + thres" with a 2D one).
- :class:`OneShot`: one reconstruction, thresholded at a healthy-calibrated percentile — the AE and DAE baselines,
  and the frequency-only ablation (an IterMask bundle's first iteration alone).
- :class:`IntensityThreshold`: the normalised intensity itself, thresholded like the rest.

No threshold ever comes from the case's labels; the label is used only to score (and, for PSNR/SSIM, to leave the
lesion out of the healthy brain).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from itermask._shared import voxel_ml
from itermask.bundle import ModelBundle
from itermask.cases import CaseVolumes, healthy_region
from itermask.normalize import iterative_zscore
from itermask.policies import PolicyReport
from itermask.preprocess import PreparedVolume, brain_mask_or_nonzero, prepare_volume
from itermask.reconstruction import one_shot_reconstruction
from itermask.session import Session
from itermask.thresholding import above_threshold

from .metrics import reconstruction_quality


@dataclass
class MethodResult:
    """One method on one case. Maps on the *input* grid; ``scan_score`` ranks scans for detection (final mask ml
    for IterMask, mean error of the map over the brain for AE/DAE, as IterMask3D's evaluation does; ml above the
    threshold for the intensity baseline);
    ``quality``: PSNR/SSIM of the reconstruction over the healthy brain on the model grid (empty for intensity)."""

    method: str
    anomaly_map: np.ndarray
    segmentation: np.ndarray
    threshold: float
    scan_score: float
    seconds: float
    quality: dict = field(default_factory=dict)
    policy: PolicyReport | None = None


def _quality(prepared: PreparedVolume, reconstruction: torch.Tensor, case: CaseVolumes, dims: int) -> dict:
    healthy = healthy_region(prepared, case, dims).numpy()
    return reconstruction_quality(prepared.image.numpy(), reconstruction.numpy(), healthy)


class IterMask:
    """A full IterMask run (see :class:`itermask.Session`) with the policy's own threshold."""

    def __init__(self, bundle: ModelBundle, policy: str, label: str | None = None):
        self.bundle, self.policy = bundle, policy
        self.label = label or f"{bundle.name} {policy}"

    def run(self, case: CaseVolumes, seed: int = 0) -> MethodResult:
        start = time.perf_counter()
        session = Session(self.bundle, case.image, case.affine, case.brain, policy=self.policy, seed=seed,
                          device="cpu")
        result = session.run()
        seconds = time.perf_counter() - start
        return MethodResult(self.label, result.anomaly_map, result.mask > 0, result.threshold,
                            result.scan_score["final_mask_ml"], seconds,
                            _quality(session.prepared, session.current.reconstruction, case, self.bundle.dims),
                            result.policy)


class OneShot:
    """One reconstruction; the anomaly map is its squared error inside the brain, thresholded at ``threshold``
    (default: the bundle's calibrated one — a baseline bundle's own, see :func:`itermask.calibration.calibrate_one_shot`)."""

    def __init__(self, bundle: ModelBundle, threshold: float | None = None, label: str | None = None):
        self.bundle = bundle
        self.threshold = float(bundle.calibration.threshold if threshold is None else threshold)
        self.label = label or bundle.name

    def run(self, case: CaseVolumes, seed: int = 0) -> MethodResult:
        start = time.perf_counter()
        prepared = prepare_volume(case.image, case.affine, case.brain, self.bundle.metadata.grid,
                                  self.bundle.grid_divisor)
        reconstruction = one_shot_reconstruction(self.bundle, prepared, seed)
        error = torch.where(prepared.brain, (reconstruction - prepared.image) ** 2, torch.zeros(()))
        anomaly_map = prepared.map_to_input(error)
        segmentation = above_threshold(anomaly_map, self.threshold, prepared.input_brain)
        seconds = time.perf_counter() - start
        return MethodResult(self.label, anomaly_map, segmentation, self.threshold,
                            float(error[prepared.brain].mean()), seconds,
                            _quality(prepared, reconstruction, case, self.bundle.dims))


class IntensityThreshold:
    """The scan's own intensity after the models' in-brain iterative z-score, above a healthy-calibrated
    ``threshold`` (an IterMask bundle's ``intensity_threshold``): what a hyper-intense lesion alone would give."""

    def __init__(self, threshold: float, label: str = "intensity threshold"):
        self.threshold, self.label = float(threshold), label

    def run(self, case: CaseVolumes, seed: int = 0) -> MethodResult:
        start = time.perf_counter()
        brain = brain_mask_or_nonzero(case.image, case.brain)
        z = iterative_zscore(torch.from_numpy(case.image.astype(np.float32)), torch.from_numpy(brain)).numpy()
        anomaly_map = np.where(brain, z, 0).astype(np.float32)
        segmentation = above_threshold(anomaly_map, self.threshold, brain)
        seconds = time.perf_counter() - start
        return MethodResult(self.label, anomaly_map, segmentation, self.threshold,
                            float(segmentation.sum() * voxel_ml(case.affine)), seconds)
