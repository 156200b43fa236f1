"""A session's arrays on the input grid, on the Slicer side: the brain, every computed iteration's mask, the shown map.

The worker sends masks and maps as values at the brain's voxels only (see :mod:`.worker`); everything else on the
input grid is zero. Kept that way, a hundred iterations' masks of a 1 mm scan take a few MB, and putting one into a
node writes only the brain's voxels. Full volumes are made in Slicer's (k, j, i) C order, so a node takes them
without a transposing copy; the (i, j, k) arrays the core's convention asks for are views of them.
"""
from __future__ import annotations

import numpy as np

from itermask.errors import ItermaskError


def brain_box(brain: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of a non-empty mask, one slice per axis."""
    found = (np.nonzero(brain.any(axis=tuple(a for a in range(brain.ndim) if a != axis)))[0]
             for axis in range(brain.ndim))
    return tuple(slice(int(f[0]), int(f[-1]) + 1) for f in found)


class InputGridCache:
    """Masks and anomaly map of one session, stored at the voxels of ``brain`` ((k, j, i) bool, from the worker)."""

    def __init__(self, brain: np.ndarray):
        self.brain = brain.astype(bool)
        self._box = brain_box(self.brain)
        self._inside = self.brain[self._box]  # scattering through the box touches a third of the volume
        self.voxels = int(self._inside.sum())
        self._masks: dict[int, np.ndarray] = {}  # iteration → packed bits at the brain's voxels
        self.map_values: np.ndarray | None = None
        self.map_high: float | None = None  # the map's 99.9 % quantile, computed by the worker

    # --- masks --------------------------------------------------------------------------------------------------
    def add_masks(self, first: int, packed: np.ndarray) -> None:
        for offset, row in enumerate(packed):
            self._masks[first + offset] = row

    def forget_from(self, count: int) -> None:
        """Drop the masks of iterations a branch (new τ, an edit) or a reset discarded."""
        for index in [i for i in self._masks if i >= count]:
            del self._masks[index]

    def mask_values(self, index: int) -> np.ndarray:
        return np.unpackbits(self._masks[index], count=self.voxels).astype(bool)

    def mask(self, index: int) -> np.ndarray:
        """Iteration ``index``'s mask, (k, j, i) bool."""
        return self.volume(self.mask_values(index))

    # --- the shown iteration's anomaly map ----------------------------------------------------------------------
    def set_map(self, values: np.ndarray, high: float | None) -> None:
        self.map_values, self.map_high = values, high

    def anomaly_map(self) -> np.ndarray:
        """(k, j, i) float32, zero outside the brain."""
        if self.map_values is None:
            raise ItermaskError("no iteration has been run yet")
        return self.volume(self.map_values)

    # --- brain voxels <-> volumes -------------------------------------------------------------------------------
    def volume(self, values: np.ndarray) -> np.ndarray:
        """A (k, j, i) volume with ``values`` at the brain's voxels, zero elsewhere."""
        out = np.zeros(self.brain.shape, values.dtype)
        self.write_into(out, values)
        return out

    def write_into(self, voxels: np.ndarray, values: np.ndarray) -> None:
        """Put ``values`` at the brain's voxels of a (k, j, i) array (e.g. a node's own voxels) whose other voxels
        are already zero."""
        voxels[self._box][self._inside] = values
