"""Clean-up of a segmentation on the input grid: what healthy-only networks are known to get wrong.

A network trained on a few healthy brains reconstructs the brain's outer rim (partial volume with CSF and skull-
stripping edges) and single voxels (noise, vessels) worse than the tissue inside, so their errors pass any
threshold that finds small lesions. Three remedies, each chosen (or not) on the validation split
(``itermask_evaluation.validation``) and recorded in a bundle's segmentation rule:

- ``median``: the anomaly map median-filtered (3 voxels per axis finer than 1.5 mm, none across thick slices)
  before thresholding, as published UAD benchmarks do;
- ``rim_mm``: nothing within that distance of the brain mask's edge is segmented;
- ``min_component_ml``: connected clusters (26-connected) smaller than that are dropped.

numpy in, numpy out; the work is done with torch so the core needs nothing else.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .errors import ItermaskError, finite_number

MEDIAN_REACH_MM = 1.5   # a voxel's neighbours along an axis count when they are within this distance
MEDIAN_CHUNK = 16       # slices per median-filter chunk: 27 copies of a chunk stay small


@dataclass(frozen=True)
class PostProcess:
    """``median``: median-filter the map; ``rim_mm``: keep this far from the brain's edge; ``min_component_ml``:
    drop smaller clusters. The default does nothing."""

    median: bool = False
    rim_mm: float = 0.0
    min_component_ml: float = 0.0

    def __post_init__(self):
        for name in ("rim_mm", "min_component_ml"):
            if finite_number(getattr(self, name), name) < 0:
                raise ItermaskError(f"{name} must not be negative, got {getattr(self, name)}")

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """In words, for reports: e.g. ``median, 3 mm rim, clusters ≥ 0.05 ml`` or ``none``."""
        parts = (["median"] if self.median else []) + ([f"{self.rim_mm:g} mm rim"] if self.rim_mm else []) + \
            ([f"clusters ≥ {self.min_component_ml:g} ml"] if self.min_component_ml else [])
        return ", ".join(parts) or "none"

    def segment(self, anomaly_map: np.ndarray, threshold: float, brain: np.ndarray,
                spacing: tuple[float, float, float]) -> np.ndarray:
        """The segmentation (bool, the map's shape) of ``anomaly_map > threshold`` inside ``brain`` after this
        clean-up; ``spacing``: the voxel size in mm along the array's three axes. The work is done on the brain's
        bounding box (one voxel of margin, so the rim and the median see the brain's edge as they would in full)."""
        brain = np.asarray(brain, bool)
        out = np.zeros(brain.shape, bool)
        if not brain.any():
            return out
        box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(brain))
        values = np.asarray(anomaly_map)[box]
        values = median_filtered(values, spacing) if self.median else values
        mask = (values > threshold) & inner_brain(brain[box], self.rim_mm, spacing)
        if self.min_component_ml > 0:
            mask = without_small_components(mask, self.min_component_ml * 1000.0 / float(np.prod(spacing)))
        out[box] = mask
        return out


def _neighbour_reach(spacing) -> list[int]:
    """Voxels to each side that the median filter reaches along each axis (1 or 0: none across thick slices)."""
    return [1 if s <= MEDIAN_REACH_MM else 0 for s in spacing]


def median_filtered(values: np.ndarray, spacing) -> np.ndarray:
    """The median over each voxel's neighbourhood (see :data:`MEDIAN_REACH_MM`), edges padded by replication;
    float32, the input's shape."""
    reach = _neighbour_reach(spacing)
    volume = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    padded = F.pad(volume[None, None], [r for r in reversed(reach) for _ in (0, 1)], mode="replicate")[0, 0]
    out = torch.empty_like(volume)
    for start in range(0, volume.shape[0], MEDIAN_CHUNK):
        stop = min(start + MEDIAN_CHUNK, volume.shape[0])
        chunk = padded[start:stop + 2 * reach[0]]
        windows = chunk.unfold(0, 2 * reach[0] + 1, 1).unfold(1, 2 * reach[1] + 1, 1).unfold(2, 2 * reach[2] + 1, 1)
        out[start:stop] = windows.reshape(*windows.shape[:3], -1).median(dim=-1).values
    return out.numpy()


def inner_brain(brain: np.ndarray, rim_mm: float, spacing) -> np.ndarray:
    """``brain`` without the voxels within ``rim_mm`` of its edge (a box reach of ``round(rim_mm / spacing)``
    voxels per axis; outside the array counts as outside the brain)."""
    brain = np.asarray(brain, bool)
    reach = [int(round(rim_mm / s)) for s in spacing]
    if not any(reach):
        return brain
    outside = torch.from_numpy(~brain).float()[None, None]
    outside = F.pad(outside, [r for r in reversed(reach) for _ in (0, 1)], value=1.0)
    for axis, r in enumerate(reach):  # a box maximum is three 1D maxima, one per axis
        kernel = [1, 1, 1]
        kernel[axis] = 2 * r + 1
        outside = F.max_pool3d(outside, kernel, stride=1)
    return brain & ~(outside[0, 0] > 0).numpy()


def without_small_components(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    """``mask`` without its 26-connected clusters of fewer than ``min_voxels`` voxels.

    Every voxel starts labelled with its own index (from 1); each round a voxel takes the largest label among its
    3×3×3 neighbours, then the label that voxel holds (pointer jumping). Labels only grow and never leave their
    cluster, and a cluster of n voxels is one label after at most n − 1 rounds, so rounds stop at ``min_voxels``:
    a label whose voxels all agree with their neighbours is a whole cluster and is judged by its size, and a cluster
    still unsettled then is larger than ``min_voxels`` and kept.

    >>> m = np.zeros((1, 3, 7), bool); m[0, 0, :3] = True; m[0, 2, 6] = True
    >>> int(without_small_components(m, 2).sum())
    3
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    box = tuple(slice(i.min(), i.max() + 1) for i in np.nonzero(mask))
    inside = torch.from_numpy(mask[box])
    index = torch.arange(1, inside.numel() + 1, dtype=torch.float64).reshape(inside.shape)  # float64: exact
    labels = torch.where(inside, index, 0.0)
    spread = lambda v: F.max_pool3d(v[None, None], 3, stride=1, padding=1)[0, 0] * inside  # noqa: E731
    for _ in range(int(np.ceil(min_voxels))):
        grown = spread(labels)
        jumped = torch.maximum(grown, labels.flatten()[(grown.long() - 1).clamp_min(0)].reshape(grown.shape)) * inside
        if torch.equal(jumped, labels):
            break
        labels = jumped
    unsettled = torch.unique(labels[inside & (spread(labels) != labels)])
    ids, sizes = torch.unique(labels[inside], return_counts=True)
    kept = torch.cat([ids[sizes >= min_voxels], unsettled])
    out = np.zeros_like(mask)
    out[box] = torch.isin(labels, kept).numpy() & mask[box]
    return out
