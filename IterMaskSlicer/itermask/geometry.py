"""The model grid: an axis-aligned RAS box around the brain, and exact resampling to it and back.

Arrays on the *input* grid are indexed (i, j, k) with a 4×4 ``affine`` from voxel index to RAS millimetres (the
nibabel convention; Slicer's IJKToRAS with the array transposed). Arrays on the *model* grid are indexed
(z, y, x) = (S, A, R), so a 2D model sees axial slices as a batch along the first axis. Because resampling goes
through world coordinates, LPS, RAS, oblique and anisotropic inputs all take the same path, and the inverse
lands every value back on the input grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .errors import ItermaskError

# 512³: 0.5 GB per float32 volume, a 0.35 mm grid over a whole brain; finer grids are a mistyped spacing.
MAX_GRID_VOXELS = 512 ** 3


@dataclass(frozen=True)
class ModelGrid:
    """``shape`` (z, y, x) voxels of ``spacing`` mm, voxel (x, y, z) = (0, 0, 0) centred at RAS ``origin``."""

    shape: tuple[int, int, int]
    spacing: float
    origin: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """Voxel (x, y, z) → RAS mm."""
        out = np.eye(4)
        out[:3, :3] *= self.spacing
        out[:3, 3] = self.origin
        return out

    @classmethod
    def around(cls, brain: np.ndarray, affine: np.ndarray, spacing: float, min_size: tuple[int, int, int],
               divisor: tuple[int, int, int]) -> "ModelGrid":
        """The smallest grid of at least ``min_size`` (z, y, x), each side a multiple of ``divisor``, centred on the brain.

        >>> brain = np.zeros((10, 10, 10), bool); brain[2:8, 2:8, 2:8] = True
        >>> ModelGrid.around(brain, np.eye(4), 2.0, (1, 16, 16), (1, 16, 16)).shape
        (3, 16, 16)
        """
        corners = _brain_corners_ras(brain, affine)
        low, high = corners.min(0), corners.max(0)
        extent_zyx = (high - low)[::-1]
        shape = tuple(
            max(m, d * math.ceil(math.ceil(e / spacing) / d)) for e, m, d in zip(extent_zyx, min_size, divisor)
        )
        voxels = math.prod(shape)
        if voxels > MAX_GRID_VOXELS:
            raise ItermaskError(f"a {spacing:g} mm model grid around this brain would have {voxels:,} voxels "
                                f"({' x '.join(map(str, shape))}), over the {MAX_GRID_VOXELS:,} a volume may have: "
                                "use a coarser spacing")
        centre = (low + high) / 2
        origin = centre - spacing * (np.array(shape[::-1]) - 1) / 2
        return cls(shape=shape, spacing=float(spacing), origin=tuple(float(v) for v in origin))

    def from_input(self, volume: np.ndarray | torch.Tensor, affine: np.ndarray, mode: str = "bilinear") -> torch.Tensor:
        """Resample an input-grid volume (i, j, k) onto this grid: float tensor (z, y, x); zero outside the input."""
        index_to_index = np.linalg.inv(affine) @ self.affine
        return _resample(_as_tensor(volume), index_to_index, self.shape[::-1], mode).permute(2, 1, 0)

    def to_input(self, volume: torch.Tensor, affine: np.ndarray, input_shape: tuple[int, int, int],
                 mode: str = "bilinear") -> torch.Tensor:
        """Resample a model-grid volume (z, y, x) onto the input grid: float tensor (i, j, k); zero outside this grid."""
        index_to_index = np.linalg.inv(self.affine) @ affine
        return _resample(volume.float().permute(2, 1, 0), index_to_index, tuple(input_shape), mode)


def resample_onto(volume: np.ndarray, source_affine: np.ndarray, target_affine: np.ndarray,
                  target_shape: tuple[int, int, int], mode: str = "nearest") -> np.ndarray:
    """A volume (i, j, k) on one grid, sampled onto another grid through world coordinates (e.g. a brain mask drawn
    on a different grid than the scan); zero where the target lies outside the source."""
    index_to_index = np.linalg.inv(source_affine) @ target_affine
    return _resample(_as_tensor(volume), index_to_index, tuple(target_shape), mode).numpy()


def _as_tensor(volume: np.ndarray | torch.Tensor) -> torch.Tensor:
    # A copy: inputs may be read-only views (a Slicer volume's voxels), which torch cannot wrap safely.
    return volume.float() if isinstance(volume, torch.Tensor) else torch.from_numpy(np.array(volume, np.float32))


def _brain_corners_ras(brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS positions of the 8 corners of the brain's voxel bounding box (voxel edges, not centres)."""
    idx = np.argwhere(brain)
    low, high = idx.min(0) - 0.5, idx.max(0) + 0.5
    corners = np.array([[c[0], c[1], c[2], 1.0] for c in np.array(np.meshgrid(*zip(low, high))).reshape(3, -1).T])
    return (affine @ corners.T).T[:, :3]


def _sampling_grid(source_shape: tuple[int, ...], index_to_index: np.ndarray, out_shape: tuple[int, ...]) -> torch.Tensor:
    """grid_sample's grid that reads a ``source_shape`` array at ``index_to_index @ (u, v, w, 1)`` for every index of
    an ``out_shape`` array (both in index order). The whole map is one affine, so ``affine_grid`` builds it."""
    theta = _normalised_to_index(source_shape, inverse=True) @ index_to_index @ _normalised_to_index(out_shape)
    return F.affine_grid(torch.from_numpy(theta[:3]).float()[None], [1, 1, *out_shape], align_corners=True)


def _resample(source: torch.Tensor, index_to_index: np.ndarray, out_shape: tuple[int, int, int],
              mode: str) -> torch.Tensor:
    """Sample ``source`` at ``index_to_index @ (u, v, w, 1)`` for every index (u, v, w) of an ``out_shape`` array.

    Both arrays are in index order (array axis n is index component n); values outside ``source`` are zero.
    """
    grid = _sampling_grid(source.shape, index_to_index, out_shape)
    return F.grid_sample(source[None, None], grid, mode=mode, padding_mode="zeros", align_corners=True)[0, 0]


class InputBoxSampler:
    """Maps model-grid volumes onto one box of the input grid, reusing a single sampling grid.

    Building the grid costs as much as sampling, and a session maps many iterations back onto the same voxels, so
    the grid is made once; the box (usually the brain's bounding box) spares the voxels nothing can land on.
    """

    def __init__(self, grid: ModelGrid, affine: np.ndarray, box: tuple[slice, slice, slice]):
        self.box = box
        start = np.eye(4)
        start[:3, 3] = [s.start for s in box]
        out_shape = tuple(s.stop - s.start for s in box)
        self.grid = _sampling_grid(grid.shape[::-1], np.linalg.inv(grid.affine) @ affine @ start, out_shape)

    def __call__(self, volumes: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
        """(C, z, y, x) model-grid volumes → (C, *box shape) float values on the input box (index order)."""
        source = volumes.float().permute(0, 3, 2, 1)[None]  # index order (x, y, z) for the model grid
        return F.grid_sample(source, self.grid, mode=mode, padding_mode="zeros", align_corners=True)[0]


def _normalised_to_index(shape: tuple[int, ...], inverse: bool = False) -> np.ndarray:
    """4×4 map from grid_sample's normalised (x, y, z) = array axes (2, 1, 0) in [-1, 1] to array indices."""
    out = np.zeros((4, 4))
    out[3, 3] = 1.0
    for axis in range(3):
        half = max(shape[axis] - 1, 1) / 2.0
        out[axis, 2 - axis] = half
        out[axis, 3] = half
    return np.linalg.inv(out) if inverse else out
