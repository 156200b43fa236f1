"""How a finished run becomes a segmentation: which anomaly map, thresholded where.

A bundle records the rule its validation chose (``metadata.segmentation``, written by
``python -m itermask_evaluation.validation --apply``) for one policy; any other policy, or a bundle without one,
gets the policy's own rule: the squared error at the calibrated threshold (IterMask²) or at τ_stop (IterMask3D).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import ItermaskError, finite_number
from .metadata import BundleMetadata
from .postprocess import PostProcess

# ``squared``: (x' − x)², any deviation from the reconstruction. ``bright``: max(x − x', 0)², only voxels brighter
# than the healthy tissue the network expected there — lesions that are hyper-intense on their sequence (FLAIR, T2),
# without the dark rims, vessels and CSF borders the network merely blurs. ``dark``: max(x' − x, 0)², the other
# side (hypo-intense lesions, as on T1). ``hyperintense``: the ``bright`` map only where the scan itself is
# hyper-intense — its in-brain z-scored intensity above the bundle's healthy-calibrated intensity threshold
# (``Calibration.intensity_threshold``) — so the network's residual and the scan's own contrast must agree: small
# MS lesions on FLAIR, which a healthy-only network at 3 mm reconstructs half-way. All in squared normalised intensity.
ANOMALY_MAPS = ("squared", "bright", "dark", "hyperintense")
_FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class SegmentationRule:
    """``anomaly``: one of :data:`ANOMALY_MAPS`; ``threshold``: on that map, or None for the policy's own;
    ``source``: how the threshold was chosen, for the report; ``post``: the clean-up of the thresholded map."""

    anomaly: str = "squared"
    threshold: float | None = None
    source: str = "the policy's own threshold"
    post: PostProcess = PostProcess()

    def __post_init__(self):
        if self.anomaly not in ANOMALY_MAPS:
            raise ItermaskError(f"unknown anomaly map {self.anomaly!r} (choose from {', '.join(ANOMALY_MAPS)})")
        if self.threshold is not None:
            finite_number(self.threshold, "the segmentation threshold")

    @classmethod
    def for_bundle(cls, metadata: BundleMetadata, policy: str) -> "SegmentationRule":
        """The bundle's chosen rule if it was chosen for ``policy``, else the policy's own."""
        chosen = metadata.segmentation
        if chosen is None or chosen.policy != policy:
            return cls()
        post = PostProcess(bool(chosen.median), chosen.rim_mm or 0.0, chosen.min_component_ml or 0.0)
        return cls(chosen.anomaly, chosen.threshold, chosen.source or "recorded in the bundle", post)

    @property
    def side(self) -> str:
        """The residual the model-grid map keeps (:func:`reconstruction_error`'s ``side``): ``hyperintense`` is the
        ``bright`` map, limited on the input grid by :func:`only_hyperintense`."""
        return "bright" if self.anomaly == "hyperintense" else self.anomaly

    def as_dict(self) -> dict:
        return {"anomaly": self.anomaly, "threshold": self.threshold, "source": self.source,
                "post": self.post.as_dict()}


def hyperintense_voxels(z: np.ndarray, intensity_threshold: float) -> np.ndarray:
    """Where a scan is hyper-intense (bool, the shape of ``z``): its in-brain z-scored intensity ``z``
    (:func:`itermask.normalize.iterative_zscore` of the scan) above ``intensity_threshold``.

    >>> hyperintense_voxels(np.array([0.5, 2.5, 3.0]), 2.0).tolist()
    [False, True, True]
    """
    return np.asarray(z) > intensity_threshold


def only_hyperintense(anomaly_map: np.ndarray, hyperintense: np.ndarray) -> np.ndarray:
    """The ``hyperintense`` map on the input grid: ``anomaly_map`` at the :func:`hyperintense_voxels`
    ``hyperintense`` (bool, the map's shape), zero elsewhere; float32.

    >>> only_hyperintense(np.array([1.0, 2.0, 3.0]), np.array([False, True, True])).tolist()
    [0.0, 2.0, 3.0]
    """
    return np.where(hyperintense, anomaly_map, 0).astype(np.float32)


def reconstruction_error(image: torch.Tensor, reconstruction: torch.Tensor, brain: torch.Tensor,
                         side: str = "squared") -> torch.Tensor:
    """``(x' − x)²`` inside the brain, zero outside, float32 (any shape, all three alike); ``side`` (``squared``,
    or a rule's :attr:`SegmentationRule.side`) ``bright``: only where the image is above its reconstruction,
    ``max(x − x', 0)²``; ``dark``: only where it is below. Computed in float64 and capped at float32's largest
    value, so a wild reconstruction gives a huge error rather than infinity (whose map would turn into NaN).

    >>> x, recon, brain = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, 2.0]), torch.ones(3, dtype=bool)
    >>> [reconstruction_error(x, recon, brain, side).tolist() for side in ("squared", "bright", "dark")]
    [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    residual = image.double() - reconstruction.double()
    if side == "bright":
        residual = residual.clamp_min(0)
    elif side == "dark":
        residual = residual.clamp_max(0)
    return torch.where(brain, residual.square().clamp(max=_FLOAT32_MAX).float(), torch.zeros(()))
