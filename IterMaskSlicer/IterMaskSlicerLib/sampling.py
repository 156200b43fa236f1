"""Worker side: a session's model-grid volumes sampled at the input brain's voxels only, in Slicer's (k, j, i) order.

``PreparedVolume.maps_to_input`` samples the whole box around the brain and zeroes what lies outside it; the Slicer side
needs only the brain's voxels (everything else is zero), a third of the box on a typical scan. Sampling just those, at
exactly the coordinates of the core's sampling grid, gives the same values bit for bit at a third of the cost; a
map that is zero outside known voxels, or a mask inside one sampled before, needs even fewer. Needs torch: imported
by :mod:`.worker` only.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from itermask.geometry import InputBoxSampler

from .caches import brain_box

ROUNDING = 1e-4  # model-grid voxels: a sample this close to a grid plane may read either side's corners


class BrainVoxels:
    """Samples (z, y, x) model-grid volumes at the input brain's voxels, enumerated in (k, j, i) C order."""

    def __init__(self, prepared):
        self.brain_kji = np.ascontiguousarray(prepared.input_brain.transpose(2, 1, 0))
        box = brain_box(prepared.input_brain)
        box_grid = InputBoxSampler(prepared.grid, prepared.input_affine, box).grid[0]  # (i, j, k, 3) of the box
        inside = torch.from_numpy(np.ascontiguousarray(self.brain_kji[box[::-1]]))
        self.points = box_grid.permute(2, 1, 0, 3)[inside]  # (voxels, 3): grid_sample's (x, y, z) in [-1, 1]
        self.count = int(inside.sum())
        self._flat_kji = np.flatnonzero(self.brain_kji)  # ascending: the enumeration
        k, j, i = np.unravel_index(self._flat_kji, self.brain_kji.shape)
        self._flat_ijk = np.ravel_multi_index((i, j, k), prepared.input_brain.shape)
        # For :meth:`near`: each voxel's lowest model-grid corner (a flat (z, y, x) index), and the voxels grouped by
        # the axes along which they lie within rounding of a grid plane, where grid_sample may read one corner
        # further. A point (x, y, z) in [-1, 1] reads the volume's axes (0, 1, 2) at (point + 1) / 2 · (size − 1).
        self.lowest, on_plane = torch.zeros(self.count, dtype=torch.long), torch.zeros(self.count, dtype=torch.long)
        for axis, size in enumerate(prepared.image.shape):
            at = (self.points[:, axis].double() + 1) / 2 * (size - 1)
            low = torch.floor(at - ROUNDING).clamp(0, size - 1)
            self.lowest = self.lowest * size + low.long()
            on_plane |= (torch.floor(at + ROUNDING) != low).long() << axis
        self.on_plane = {tuple(1 + (int(axes) >> a & 1) for a in range(3)): torch.nonzero(on_plane == axes)[:, 0]
                         for axes in torch.unique(on_plane) if axes}  # corners to reach along each axis -> voxels

    def values(self, volume: torch.Tensor, at: np.ndarray | None = None) -> np.ndarray:
        """float32 trilinear samples of a (z, y, x) volume, as ``maps_to_input`` gives them, at every voxel or at
        those of ``at`` (bool, one per voxel) only."""
        points = self.points if at is None else self.points.index_select(0, torch.from_numpy(np.flatnonzero(at)))
        source = volume.float().permute(2, 1, 0)[None, None]  # index order (x, y, z), as the core's sampler reads it
        return F.grid_sample(source, points[None, None, None], mode="bilinear", padding_mode="zeros",
                             align_corners=True)[0, 0, 0, 0].numpy()

    def input_volume(self, values: np.ndarray, at: np.ndarray | None = None) -> np.ndarray:
        """An (i, j, k) float32 volume of the input grid, as the core holds its arrays, with ``values`` at every
        voxel or at those of ``at`` (bool, one per voxel), and zero elsewhere."""
        out = np.zeros(self.brain_kji.shape[::-1], np.float32)
        out.reshape(-1)[self._flat_ijk if at is None else self._flat_ijk[at]] = values
        return out

    def ordinals(self, ijk: np.ndarray) -> np.ndarray:
        """The places in the enumeration of brain voxels given as (n, 3) (i, j, k) indices."""
        return np.searchsorted(self._flat_kji, np.ravel_multi_index(tuple(ijk[:, ::-1].T), self.brain_kji.shape))

    def near(self, changed: torch.Tensor) -> np.ndarray:
        """bool, one per voxel: whether its sample can depend on a voxel of ``changed`` ((z, y, x) bool), i.e. on
        one of the eight corners around it (within rounding of a grid plane: the corners a step further too)."""
        near = any_ahead(changed, (1, 1, 1)).reshape(-1)[self.lowest]
        for reach, voxels in self.on_plane.items():
            near[voxels] = any_ahead(changed, reach).reshape(-1)[self.lowest[voxels]]
        return near.numpy()


def any_ahead(volume: torch.Tensor, reach: tuple[int, ...]) -> torch.Tensor:
    """bool: whether any voxel of the box from each voxel to ``reach`` voxels further along each axis is set.

    >>> any_ahead(torch.tensor([[[False, False, True, False]]]), (0, 0, 1)).tolist()
    [[[False, True, True, False]]]
    """
    out = volume.bool()
    for axis, steps in enumerate(reach):  # a box is three 1D reaches, one per axis
        size, reached = out.shape[axis], out.clone()
        for step in range(1, min(steps, size - 1) + 1):
            reached.narrow(axis, 0, size - step).logical_or_(out.narrow(axis, step, size - step))
        out = reached
    return out


class MaskSampler:
    """Iteration masks at the brain's voxels (bool, as ``mask_to_input`` thresholds them at 0.5), each sampled only
    where it can differ from the mask sampled before it.

    A trilinear sample depends on its eight model-grid corners alone, so where none of them changed between two
    masks the bit is the same. An IterMask step takes a few per cent of the mask away: a step's mask costs those
    voxels, not the brain's (a new mask unlike the last, e.g. an edit, costs the brain's). And a mask inside the last
    samples no higher anywhere (the weights are non-negative, rounding is monotone), so it stays below 0.5 wherever
    the last one was.
    """

    def __init__(self, voxels: BrainVoxels):
        self.voxels = voxels
        self._last: tuple[torch.Tensor, np.ndarray] | None = None  # the mask sampled last, and its bits

    def sample(self, mask: torch.Tensor) -> np.ndarray:
        """``mask`` ((z, y, x) bool on the model grid) at the brain's voxels."""
        if self._last is None:
            inside = self.voxels.values(mask) >= 0.5
        else:
            before, inside = self._last
            at = self.voxels.near(mask != before)
            if not (mask & ~before).any():  # inside it: samples no higher, so nothing outside it comes in
                at &= inside
            inside = inside.copy()
            inside[at] = self.voxels.values(mask, at) >= 0.5
        self._last = (mask, inside)
        return inside
