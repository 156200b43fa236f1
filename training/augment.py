"""Augmentation of healthy training samples: the variety a small healthy set lacks — other head poses and shapes
(flips, small affine and elastic deformations) and other scanners (bias fields, contrast, noise).

Every function takes samples (N, *spatial) — axial slices (N, H, W) or volumes (N, D, H, W) on the model grid,
the image z-scored inside the brain — and a generator, and returns new tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from itermask.normalize import iterative_zscore


@dataclass(frozen=True)
class Augmentation:
    """How strong each augmentation is; distances in mm (the model grid is isotropic)."""

    rotate_deg: float = 10.0      # uniform in ±, about each axis (in-plane only for slices)
    scale: float = 0.08           # isotropic zoom, uniform in 1 ± scale
    shift_mm: float = 6.0         # uniform in ± along each axis
    elastic_sd_mm: float = 2.0    # SD of a smooth displacement field ...
    elastic_cell_mm: float = 24.0  # ... drawn on a grid this coarse
    bias_sd: float = 0.15         # SD of the log of a smooth multiplicative field over the head
    gamma_log: float = 0.3        # gamma = exp(uniform in ±), on intensities rescaled to [0, 1] in the brain
    noise_sd: float = 0.03        # Gaussian noise SD on that [0, 1] scale, itself uniform in [0, noise_sd]


def smooth_random_field(shape: tuple[int, ...], cell_px: float, sd: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise of standard deviation ``sd`` drawn on a grid ``cell_px`` voxels coarse and interpolated up to
    ``shape`` (N, C, *spatial): smooth blobs rather than grain."""
    spatial = shape[2:]
    coarse = [max(2, math.ceil(n / cell_px)) for n in spatial]
    field = sd * torch.randn((*shape[:2], *coarse), generator=gen)
    return F.interpolate(field, size=spatial, mode="bilinear" if len(spatial) == 2 else "trilinear",
                         align_corners=False)


def random_flip(x: torch.Tensor, brain: torch.Tensor, valid: torch.Tensor, gen: torch.Generator):
    """Left-right flips of half the samples (the last axis is R): brains are nearly symmetric."""
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).view(-1, *(1,) * (x.dim() - 1))
    return tuple(torch.where(flip, t.flip(-1), t) for t in (x, brain, valid))


def _random_rotation(dims: int, max_deg: float, gen: torch.Generator) -> torch.Tensor:
    """A (dims, dims) rotation by angles uniform in ±``max_deg`` about each axis (one axis for 2D)."""
    angles = (2 * torch.rand(1 if dims == 2 else 3, generator=gen) - 1) * math.radians(max_deg)
    rot = torch.eye(dims)
    for axis, angle in enumerate(angles):
        c, s = math.cos(angle), math.sin(angle)
        plane = [(0, 1), (0, 2), (1, 2)][axis]
        step = torch.eye(dims)
        step[plane[0], plane[0]], step[plane[0], plane[1]] = c, -s
        step[plane[1], plane[0]], step[plane[1], plane[1]] = s, c
        rot = rot @ step
    return rot


def random_deformation(x: torch.Tensor, brain: torch.Tensor, valid: torch.Tensor, gen: torch.Generator,
                       spacing_mm: float, aug: Augmentation = Augmentation()):
    """A small random affine (rotation, zoom, shift) plus a smooth elastic field, one resampling per sample.

    The image is resampled linearly; the masks linearly then cut at 0.5, and the image is zeroed outside the new
    brain, as preprocessing leaves it.
    """
    n, spatial = x.shape[0], x.shape[1:]
    dims = len(spatial)
    # affine_grid works in coordinates normalised to [-1, 1] per axis, listed last axis first; convert from voxels
    # so that a rotation stays a rotation on a non-cubic grid.
    half = torch.tensor([s / 2 for s in reversed(spatial)])
    thetas = []
    for _ in range(n):
        zoom = 1 + (2 * torch.rand((), generator=gen) - 1) * aug.scale
        linear = torch.diag(1 / half) @ (_random_rotation(dims, aug.rotate_deg, gen) * zoom) @ torch.diag(half)
        shift = (2 * torch.rand(dims, generator=gen) - 1) * aug.shift_mm / spacing_mm / half
        thetas.append(torch.cat([linear, shift[:, None]], dim=1))
    grid = F.affine_grid(torch.stack(thetas), [n, 1, *spatial], align_corners=False)
    cell_px = aug.elastic_cell_mm / spacing_mm
    displacement = smooth_random_field((n, dims, *spatial), cell_px, aug.elastic_sd_mm / spacing_mm, gen)
    grid = grid + torch.movedim(displacement, 1, -1) / half
    stacked = torch.stack([x, brain.float(), valid.float()], dim=1)
    moved = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    new_brain = moved[:, 1] > 0.5
    return torch.where(new_brain, moved[:, 0], torch.zeros(())), new_brain, (moved[:, 2] > 0.5) & new_brain


def random_intensity(x: torch.Tensor, brain: torch.Tensor, gen: torch.Generator, spacing_mm: float,
                     aug: Augmentation = Augmentation()) -> torch.Tensor:
    """Another scanner's look: a smooth bias field, a gamma change of contrast and noise, applied to the brain's
    intensities rescaled to [0, 1] (1st–99th percentile) and z-scored again exactly as preprocessing does."""
    out = torch.zeros_like(x)
    for i in range(x.shape[0]):
        if brain[i].sum() < 2:
            continue
        lo, hi = torch.quantile(x[i][brain[i]], torch.tensor([0.01, 0.99]))
        unit = ((x[i] - lo) / (hi - lo).clamp_min(1e-6)).clamp_min(0)
        gamma = math.exp((2 * torch.rand((), generator=gen).item() - 1) * aug.gamma_log)
        bias = smooth_random_field((1, 1, *x.shape[1:]), 60.0 / spacing_mm, aug.bias_sd, gen)[0, 0].exp()
        noise_sd = torch.rand((), generator=gen) * aug.noise_sd
        changed = unit ** gamma * bias + noise_sd * torch.randn(x.shape[1:], generator=gen)
        out[i] = iterative_zscore(changed, brain[i])
    return out


def random_augmentation(x: torch.Tensor, brain: torch.Tensor, valid: torch.Tensor, gen: torch.Generator,
                        spacing_mm: float, aug: Augmentation = Augmentation()):
    """Flip, deform and change the intensities of (N, *spatial) samples; returns new (x, brain, valid)."""
    x, brain, valid = random_flip(x, brain, valid, gen)
    x, brain, valid = random_deformation(x, brain, valid, gen, spacing_mm, aug)
    return random_intensity(x, brain, gen, spacing_mm, aug), brain, valid
