"""Checking an input scan and putting it on the model grid (and results back on the input grid)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ._shared import voxel_ml
from .errors import ItermaskError
from .geometry import InputBoxSampler, ModelGrid, resample_onto
from .metadata import Grid
from .normalize import iterative_zscore

# A brain (a mask, or the non-zero region of a "skull-stripped" image) that fills nearly the whole field of view is
# not a brain: the image is not skull-stripped, or the mask is all ones.
_MAX_BRAIN_FRACTION = 0.9
# … nor is a non-zero region larger than any intracranial volume (adults: 1.1–2.0 l): a head with skull on a zero
# background (measured here: 2.9–5.4 l for three such scans, at most 1.6 l for the skull-stripped ones).
_MAX_BRAIN_ML = 2500.0
# Normalised intensities are clipped to ±this many SD: real tissue and lesions stay far inside it, while a corrupt
# voxel (1e30) would otherwise overflow float32 in the frequency filter and in the squared error.
_MAX_ABS_Z = 100.0
# Two grids closer than this (mm, or unitless for the direction part) are the same grid.
_SAME_GRID_TOLERANCE = 1e-3


@dataclass
class PreparedVolume:
    """A scan on the model grid, plus what is needed to map results back onto its own grid.

    ``image`` (z, y, x) float32, normalised, zero outside ``brain`` (z, y, x) bool.
    """

    image: torch.Tensor
    brain: torch.Tensor
    grid: ModelGrid
    input_affine: np.ndarray
    input_brain: np.ndarray

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.input_brain.shape

    @cached_property
    def _sampler(self) -> InputBoxSampler:
        found = np.nonzero(self.input_brain.any(axis=(1, 2)))[0], np.nonzero(self.input_brain.any(axis=(0, 2)))[0], \
            np.nonzero(self.input_brain.any(axis=(0, 1)))[0]
        box = tuple(slice(int(f[0]), int(f[-1]) + 1) for f in found)
        return InputBoxSampler(self.grid, self.input_affine, box)

    def maps_to_input(self, volumes: torch.Tensor) -> np.ndarray:
        """(C, z, y, x) model-grid maps → (C, i, j, k) float32 on the input grid (trilinear), zero outside the brain."""
        sampler = self._sampler
        out = np.zeros((volumes.shape[0], *self.input_shape), np.float32)
        inside = self.input_brain[sampler.box]
        out[(slice(None), *sampler.box)] = np.where(inside, sampler(volumes).numpy(), 0)
        return out

    def map_to_input(self, volume: torch.Tensor) -> np.ndarray:
        """A model-grid map (z, y, x) → float32 array on the input grid (trilinear), zero outside the input brain."""
        return self.maps_to_input(volume[None])[0]

    def mask_to_input(self, mask: torch.Tensor) -> np.ndarray:
        """A model-grid mask → bool array on the input grid (partial-volume fraction ≥ 0.5), inside the input brain."""
        return (self.map_to_input(mask.float()) >= 0.5) & self.input_brain

    def mask_from_input(self, mask: np.ndarray) -> torch.Tensor:
        """An input-grid mask (e.g. edited by a person) → bool mask on the model grid, inside the brain."""
        check_same_shape(mask, self.input_shape, "mask")
        return (self.grid.from_input(np.asarray(mask) > 0, self.input_affine) >= 0.5) & self.brain


def check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[3] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise ItermaskError(f"expected a 3D volume, got {image.ndim}D data of shape {image.shape}")
    if np.issubdtype(image.dtype, np.complexfloating):
        raise ItermaskError("the image is complex-valued: save its magnitude as a real-valued image")
    if not np.issubdtype(image.dtype, np.number):
        raise ItermaskError(f"image voxels must be numbers, got {image.dtype}")
    if not np.isfinite(image).all():
        raise ItermaskError("image contains NaN or infinite voxels")
    image = as_float32(image)
    if image.size == 0 or not image.any():
        raise ItermaskError("image is empty (all voxels are zero)")
    return image


def as_float32(image: np.ndarray) -> np.ndarray:
    """``image`` as float32. Values beyond float32's range (or so small they would vanish) are first divided by the
    largest magnitude: the scan is z-scored later, so its scale does not matter, and a plain cast would turn them
    into infinities (or zeros)."""
    if image.dtype == np.float32:
        return image
    largest = float(np.abs(image).max()) if image.size else 0.0
    if largest > 1e30 or 0 < largest < 1e-30:
        image = image / largest
    return image.astype(np.float32)


def check_same_shape(array: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if tuple(np.shape(array)) != tuple(shape):
        raise ItermaskError(f"{what} has shape {tuple(np.shape(array))} but the image has shape {tuple(shape)}")


def brain_mask_or_nonzero(image: np.ndarray, brain_mask: np.ndarray | None,
                          voxel_ml: float | None = None) -> np.ndarray:
    """The user's brain mask (any non-zero voxel), else the non-zero region of a skull-stripped image.

    A mask that fills nearly the whole field of view (an all-ones export) says nothing about where the brain is, so
    the image is then judged as if no mask had been given. With ``voxel_ml`` (the volume of a voxel), a non-zero
    region larger than any brain is refused too: a head with skull on a zero background.
    """
    if brain_mask is not None:
        brain = _brain_from_mask(brain_mask, image.shape)
        if brain.mean() <= _MAX_BRAIN_FRACTION:
            return brain
        missing = f"the brain mask covers {100 * brain.mean():.0f}% of the field of view (it is not a brain mask)"
    else:
        missing = "no brain mask given"
    brain = image != 0
    if voxel_ml is not None and brain.sum() * voxel_ml > _MAX_BRAIN_ML:
        missing += f" and the image's non-zero region ({brain.sum() * voxel_ml / 1000:.1f} l) is larger than a brain"
    elif brain.mean() > _MAX_BRAIN_FRACTION:
        missing += " and the image is not skull-stripped"
    else:
        return brain
    raise ItermaskError(f"{missing}: pass --skull-strip (ROBEX; for a sequence other than T1, "
                        "--skull-strip-from T1.nii.gz) or a brain mask (--brain-mask)")


def _brain_from_mask(brain_mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    brain_mask = np.asarray(brain_mask)
    if brain_mask.ndim == 4 and brain_mask.shape[3] == 1:
        brain_mask = brain_mask[..., 0]
    check_same_shape(brain_mask, shape, "brain mask")
    if not np.isfinite(brain_mask).all():
        raise ItermaskError("brain mask contains NaN or infinite voxels")
    brain = brain_mask > 0.5 if np.issubdtype(brain_mask.dtype, np.floating) else brain_mask != 0
    if not brain.any():
        raise ItermaskError("brain mask is empty")
    return brain


def mask_on_image_grid(mask: np.ndarray, mask_affine: np.ndarray, image_shape: tuple[int, int, int],
                       image_affine: np.ndarray, what: str = "brain mask") -> np.ndarray:
    """A mask read with its own geometry, on the image's grid: as it is when the grids are the same, else sampled
    (nearest neighbour) through world coordinates. Shape alone proves nothing: a mask of the right shape with
    another affine lies elsewhere in the head.

    A mask that does not overlap the image in physical space is refused rather than turned into an empty one.
    """
    mask = np.asarray(mask)
    if mask.ndim == 4 and mask.shape[3] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise ItermaskError(f"{what} is not a 3D volume (shape {mask.shape})")
    mask_affine, image_affine = check_affine(mask_affine), check_affine(image_affine)
    if mask.shape == tuple(image_shape) and np.allclose(mask_affine, image_affine, atol=_SAME_GRID_TOLERANCE):
        return mask
    inside = _brain_from_mask(mask, mask.shape)
    on_image = resample_onto(inside, mask_affine, image_affine, tuple(image_shape), mode="nearest") > 0.5
    if not on_image.any():
        raise ItermaskError(f"{what} does not overlap the image in physical space (its voxel-to-world matrix puts "
                            "it elsewhere): is it the mask of this scan?")
    return on_image.astype(np.uint8)


def check_affine(affine: np.ndarray | None) -> np.ndarray:
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise ItermaskError("the image geometry (voxel-to-world matrix) is invalid")
    return affine


def prepare_volume(image: np.ndarray, affine: np.ndarray | None, brain_mask: np.ndarray | None,
                   grid: Grid, divisor: tuple[int, int, int]) -> PreparedVolume:
    """Check the inputs, resample to the model grid and normalise.

    Args:
        image: (i, j, k) scan; ``affine`` maps its voxel indices to RAS mm (identity if None).
        brain_mask: same shape, non-zero inside the brain; None to use the image's non-zero region.
        grid: the bundle's model grid: its spacing and smallest size (z, y, x).
        divisor: (z, y, x) multiple every model-grid side must be (a 2D model needs none along z).
    """
    image = check_image(image)
    affine = check_affine(affine)
    brain = brain_mask_or_nonzero(image, brain_mask, voxel_ml(affine))
    model_grid = ModelGrid.around(brain, affine, grid.spacing_mm, grid.min_size, divisor)
    model_brain = model_grid.from_input(brain, affine) >= 0.5
    if not model_brain.any():
        raise ItermaskError("brain mask is smaller than one voxel of the model grid")
    model_image = iterative_zscore(model_grid.from_input(image, affine), model_brain).clamp(-_MAX_ABS_Z, _MAX_ABS_Z)
    return PreparedVolume(model_image, model_brain, model_grid, affine, brain)
