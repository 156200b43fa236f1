"""Worker side: a session's model-grid volumes sampled at the input brain's voxels only, in Slicer's (k, j, i) order.

``PreparedVolume.maps_to_input`` samples the whole box around the brain and zeroes what lies outside it; the Slicer side
needs only the brain's voxels (everything else is zero), a third of the box on a typical scan. Sampling just those, at
exactly the coordinates of the core's sampling grid, gives the same values bit for bit at a third of the cost, and
many volumes go through one call (a Run's masks), which costs little more than one. Needs torch: imported by
:mod:`.worker` only.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from itermask.geometry import InputBoxSampler

from .caches import brain_box

CHUNK = 16  # volumes per call: bounds the memory a long Run's masks take at once


class BrainVoxels:
    """Samples (z, y, x) model-grid volumes at the input brain's voxels, enumerated in (k, j, i) C order."""

    def __init__(self, prepared):
        self.brain_kji = np.ascontiguousarray(prepared.input_brain.transpose(2, 1, 0))
        box = brain_box(prepared.input_brain)
        box_grid = InputBoxSampler(prepared.grid, prepared.input_affine, box).grid[0]  # (i, j, k, 3) of the box
        inside = torch.from_numpy(np.ascontiguousarray(self.brain_kji[box[::-1]]))
        self.points = box_grid.permute(2, 1, 0, 3)[inside][None, None, None]  # (1, 1, 1, voxels, 3)
        self.count = int(inside.sum())

    def values(self, volumes: list[torch.Tensor]) -> np.ndarray:
        """(len(volumes), voxels) float32: trilinear samples, as ``maps_to_input`` gives at these voxels."""
        out = np.empty((len(volumes), self.count), np.float32)
        for start in range(0, len(volumes), CHUNK):
            batch = torch.stack([v.float() for v in volumes[start:start + CHUNK]])
            source = batch.permute(0, 3, 2, 1)[None]  # index order (x, y, z), as the core's sampler reads it
            sampled = F.grid_sample(source, self.points, mode="bilinear", padding_mode="zeros", align_corners=True)
            out[start:start + len(batch)] = sampled[0, :, 0, 0].numpy()
        return out
