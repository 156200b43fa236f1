"""Clean-up of a segmentation on the input grid: what healthy-only networks are known to get wrong.

A network trained on a few healthy brains reconstructs the brain's outer rim (partial volume with CSF and skull-
stripping edges) and single voxels (noise, vessels) worse than the tissue inside, so their errors pass any
threshold that finds small lesions. Three remedies, each chosen (or not) on the validation split
(``itermask_evaluation.validation``) and recorded in a bundle's segmentation rule:

- ``median``: the anomaly map median-filtered (3 voxels per axis finer than 1.5 mm, none across thick slices)
  before thresholding, as published UAD benchmarks do;
- ``rim_mm``: nothing within that distance of the brain mask's edge is segmented;
- ``min_component_ml``: connected clusters (26-connected) smaller than that are dropped.

numpy in, numpy out; the work is done with numpy and torch so the core needs nothing else.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from functools import cached_property

import numpy as np
import torch
from torch.nn import functional as F

from .errors import ItermaskError, finite_number

MEDIAN_REACH_MM = 1.5   # a voxel's neighbours along an axis count when they are within this distance
MEDIAN_CHUNK = 1 << 17  # voxels per median-filter chunk: 27 copies of a chunk stay small (14 MB)


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
        return self.prepare(anomaly_map, self.region(brain, spacing), spacing).segment(threshold)

    def region(self, brain: np.ndarray, spacing: tuple[float, float, float]) -> SegmentableRegion:
        """Where a segmentation may lie: the brain without its rim, on the brain's bounding box (one voxel of margin,
        so the rim sees the brain's edge as it would in full). It depends on the brain alone, so a session that
        shows many maps of one brain computes it once (the rim's erosion is the clean-up's slowest part)."""
        brain = np.asarray(brain, bool)
        if not brain.any():
            return SegmentableRegion(brain.shape, (slice(0, 0),) * brain.ndim, np.zeros((0,) * brain.ndim, bool))
        box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(brain))
        return SegmentableRegion(brain.shape, box, inner_brain(brain[box], self.rim_mm, spacing))

    def prepare(self, anomaly_map: np.ndarray, region: SegmentableRegion,
                spacing: tuple[float, float, float]) -> CleanedMap:
        """What of the clean-up does not depend on the threshold, done once per map, so that a threshold slider
        pays only for the comparison and the clusters (see :class:`CleanedMap`). The median is taken only at the
        ``region``'s voxels (see :meth:`region`)."""
        values = np.asarray(anomaly_map)[region.box]
        values = median_at(values, spacing, region.allowed) if self.median else values[region.allowed]
        return CleanedMap(region, values, self.min_component_ml * 1000.0 / float(np.prod(spacing)))


@dataclass(frozen=True)
class SegmentableRegion:
    """The voxels a segmentation may hold under a clean-up: ``allowed`` (bool, the shape of ``box``, a box of a
    volume of ``shape``)."""

    shape: tuple[int, ...]
    box: tuple[slice, ...]
    allowed: np.ndarray

    @cached_property
    def allowed_index(self) -> np.ndarray:
        """The flat (C order) indices of ``allowed``'s voxels in the box: kept, so a map's voxels above a threshold
        are found without scanning the box."""
        return np.flatnonzero(self.allowed)


@dataclass(frozen=True)
class CleanedMap:
    """A map ready to be thresholded under a clean-up: ``values`` (1D, median-filtered where the clean-up asks) at
    the ``region``'s voxels; ``min_voxels``: the smallest cluster kept (0: all)."""

    region: SegmentableRegion
    values: np.ndarray
    min_voxels: float

    def voxels(self, threshold: float) -> np.ndarray:
        """The segmentation at ``threshold``, (n, 3) indices into a volume of the region's ``shape``: the values
        above it, without the small clusters. Costs the comparison and the segmented voxels, not the volume."""
        region = self.region
        above = np.stack(np.unravel_index(region.allowed_index[self.values > threshold], region.allowed.shape), 1)
        kept = large_clusters(above, self.min_voxels) if self.min_voxels > 0 else above
        return kept + [s.start for s in region.box]

    def segment(self, threshold: float) -> np.ndarray:
        """The segmentation at ``threshold`` (bool, the region's ``shape``), see :meth:`voxels`."""
        out = np.zeros(self.region.shape, bool)
        out[tuple(self.voxels(threshold).T)] = True
        return out


def _neighbour_reach(spacing) -> list[int]:
    """Voxels to each side that the median filter reaches along each axis (1 or 0: none across thick slices)."""
    return [1 if s <= MEDIAN_REACH_MM else 0 for s in spacing]


def median_filtered(values: np.ndarray, spacing) -> np.ndarray:
    """The median over each voxel's neighbourhood (see :data:`MEDIAN_REACH_MM`), edges padded by replication;
    float32, the input's shape."""
    values = np.asarray(values)
    return median_at(values, spacing, np.ones(values.shape, bool)).reshape(values.shape)


def median_at(values: np.ndarray, spacing, at: np.ndarray) -> np.ndarray:
    """:func:`median_filtered` at the voxels ``at`` (bool, the shape of ``values``) only: float32, one value per
    voxel of ``at`` in C order. A voxel's neighbours are gathered from the padded volume (a chunk of voxels at a
    time, so the copies stay small) and their median taken. When no value is negative (every anomaly map), a voxel
    with more than half its neighbours zero has median zero, so only the others are computed: on a map that is zero
    over most of the brain (``hyperintense``) that is a few per cent of it."""
    reach = _neighbour_reach(spacing)
    volume = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
    padded = F.pad(volume[None, None], [r for r in reversed(reach) for _ in (0, 1)], mode="replicate")[0, 0]
    strides = torch.tensor(padded.stride())
    window = torch.cartesian_prod(*[torch.arange(2 * r + 1) for r in reach]).reshape(-1, 3)
    offsets = window @ strides  # each neighbour's place relative to the window's first corner, in the flat volume
    needed = np.asarray(at, bool)
    if volume.numel() and float(volume.min()) >= 0:
        needed = needed & (nonzero_neighbours(padded.numpy(), reach) > len(offsets) // 2)
    corners = torch.from_numpy(np.argwhere(needed)) @ strides  # a voxel's window starts at its own index once padded
    flat, found = padded.reshape(-1), torch.empty(len(corners), dtype=torch.float32)
    for start in range(0, len(corners), MEDIAN_CHUNK):
        stop = start + MEDIAN_CHUNK
        found[start:stop] = flat[corners[start:stop, None] + offsets].median(dim=1).values
    out = np.zeros(int(np.count_nonzero(at)), np.float32)
    out[needed[np.asarray(at, bool)]] = found.numpy()
    return out


def nonzero_neighbours(padded: np.ndarray, reach) -> np.ndarray:
    """How many of each voxel's neighbours are nonzero (uint8), for a volume ``padded`` by ``reach`` (0 or 1 per
    axis, see :func:`_neighbour_reach`) on each side; the unpadded shape. A box sum is three 1D sums, one per axis.

    >>> nonzero_neighbours(np.pad(np.eye(3)[None], ((0, 0), (1, 1), (1, 1))), [0, 1, 1])[0].tolist()
    [[2, 2, 1], [2, 3, 2], [1, 2, 2]]
    """
    count = (np.asarray(padded) != 0).view(np.uint8)
    for axis, r in enumerate(reach):
        if r:
            shifted = [tuple(slice(k, count.shape[axis] - 2 + k) if a == axis else slice(None) for a in range(3))
                       for k in range(3)]
            count = count[shifted[0]] + count[shifted[1]] + count[shifted[2]]
    return count


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
    """``mask`` without its 26-connected clusters of fewer than ``min_voxels`` voxels (see :func:`large_clusters`).

    >>> m = np.zeros((1, 3, 7), bool); m[0, 0, :3] = True; m[0, 2, 6] = True
    >>> int(without_small_components(m, 2).sum())
    3
    """
    mask = np.asarray(mask, bool)
    out = np.zeros_like(mask)
    out[tuple(large_clusters(np.argwhere(mask), min_voxels).T)] = True
    return out


def large_clusters(voxels: np.ndarray, min_voxels: float) -> np.ndarray:
    """The rows of ``voxels`` ((n, ndim) distinct indices) whose 26-connected cluster has ``min_voxels`` or more.

    The voxels are numbered and each is joined by an edge to each neighbour among them; every voxel points at a voxel
    of its own cluster (itself at first). Each round, for every edge whose two ends point at different voxels, the
    higher of the two is made to point at the lower (its smallest offer wins), then pointers are followed to their
    ends. Pointers only go down and never leave a cluster, and a round joins every pair of neighbouring trees, so
    after a few rounds (about the logarithm of the largest cluster's size) every cluster points at one voxel, and
    the clusters are counted.
    """
    voxels = np.asarray(voxels, np.int64)
    if not len(voxels):
        return voxels
    low = voxels.min(axis=0) - 1
    shape = tuple(voxels.max(axis=0) - low + 2)  # a margin: every voxel's neighbours lie in the box
    flat = np.ravel_multi_index(tuple((voxels - low).T), shape)
    number = np.full(int(np.prod(shape)), -1, np.int64)
    number[flat] = np.arange(len(flat))
    strides = np.cumprod((1,) + shape[:0:-1])[::-1]
    steps = [int(np.dot(d, strides)) for d in itertools.product((-1, 0, 1), repeat=len(shape))
             if d > (0,) * len(shape)]  # each edge once
    ends = [(np.flatnonzero(n >= 0), n[n >= 0]) for n in (number[flat + step] for step in steps)]
    first, second = np.concatenate([a for a, _ in ends]), np.concatenate([b for _, b in ends])
    points = np.arange(len(flat))
    while (apart := points[first] != points[second]).any():
        a, b = points[first[apart]], points[second[apart]]
        np.minimum.at(points, np.maximum(a, b), np.minimum(a, b))
        while not np.array_equal(followed := points[points], points):
            points = followed
    return voxels[np.bincount(points, minlength=len(flat))[points] >= min_voxels]
