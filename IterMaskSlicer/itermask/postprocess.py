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
        clean-up; ``spacing``: the voxel size in mm along the array's three axes."""
        values = median_filtered(anomaly_map, spacing) if self.median else anomaly_map
        mask = (values > threshold) & inner_brain(brain, self.rim_mm, spacing)
        if self.min_component_ml > 0:
            mask = without_small_components(mask, self.min_component_ml * 1000.0 / float(np.prod(spacing)))
        return mask


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
    near_edge = F.max_pool3d(outside, [2 * r + 1 for r in reach], stride=1)[0, 0] > 0
    return brain & ~near_edge.numpy()


def without_small_components(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    """``mask`` without its 26-connected clusters of fewer than ``min_voxels`` voxels.

    Every voxel starts labelled with its own index (from 1); each round a voxel takes the largest label among its
    3×3×3 neighbours, then the label that voxel holds (pointer jumping, so long clusters take few rounds). Labels
    only grow and never leave their cluster, so every cluster ends labelled by its largest index.

    >>> m = np.zeros((1, 3, 7), bool); m[0, 0, :3] = True; m[0, 2, 6] = True
    >>> without_small_components(m, 2).sum()
    3
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return mask
    box = tuple(slice(i.min(), i.max() + 1) for i in np.nonzero(mask))
    inside = torch.from_numpy(mask[box])
    index = torch.arange(1, inside.numel() + 1, dtype=torch.float64).reshape(inside.shape)  # float64: exact
    labels = torch.where(inside, index, 0.0)
    while True:
        spread = F.max_pool3d(labels[None, None], 3, stride=1, padding=1)[0, 0] * inside
        jumped = torch.maximum(spread, labels.flatten()[(spread.long() - 1).clamp_min(0)].reshape(spread.shape)) * inside
        if torch.equal(jumped, labels):
            break
        labels = jumped
    ids, sizes = torch.unique(labels[inside], return_counts=True)
    out = np.zeros_like(mask)
    out[box] = torch.isin(labels, ids[sizes >= min_voxels]).numpy() & mask[box]
    return out
