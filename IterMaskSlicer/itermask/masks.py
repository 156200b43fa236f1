"""Random training masks: clusters of square patches placed with a random anisotropic Gaussian density (IterMask²)."""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def random_rotation_2d(generator: torch.Generator) -> torch.Tensor:
    angle = torch.rand((), generator=generator) * math.pi
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])


def gaussian_patch_masks(brain: torch.Tensor, generator: torch.Generator, patches: int = 1000,
                         sides: tuple[int, ...] = (4, 8, 16), coarse: float = 10.0,
                         eigen_range: tuple[float, float] = (0.3, 10.0)) -> torch.Tensor:
    """One random mask per slice, inside the brain.

    Args:
        brain: (N, H, W) bool brain masks; a slice with no brain gets an empty mask.
        generator: the source of randomness (a fresh draw every call: masks must differ every step).
        patches: squares per mask (paper: about 1000), each of side drawn from ``sides`` pixels.
        coarse: pixels per unit of the covariance eigenvalues (``λ ~ U(eigen_range)`` in coarse units²).

    Returns:
        (N, H, W) bool masks, ``mask ⊆ brain``.

    Patch positions are drawn *jointly* from N(centre, Σ), Σ = O·diag(λ1, λ2)·Oᵀ · coarse², which is sampling the
    pixel grid with probability ∝ the Gaussian density (the reference code drew rows and columns independently).
    """
    n, h, w = brain.shape
    out = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        inside = brain[i].nonzero()
        if len(inside) == 0:
            continue
        centre = inside[torch.randint(len(inside), (), generator=generator)].double()
        lam = eigen_range[0] + (eigen_range[1] - eigen_range[0]) * torch.rand(2, generator=generator, dtype=torch.float64)
        rot = random_rotation_2d(generator).double()
        scale = rot @ torch.diag(lam.sqrt() * coarse)
        points = centre + torch.randn(patches, 2, generator=generator, dtype=torch.float64) @ scale.T
        points = points.round().long()
        keep = (points[:, 0] >= 0) & (points[:, 0] < h) & (points[:, 1] >= 0) & (points[:, 1] < w)
        points = points[keep]
        side_choice = torch.randint(len(sides), (len(points),), generator=generator)
        seeds = torch.zeros(len(sides), h, w)
        seeds[side_choice, points[:, 0], points[:, 1]] = 1.0
        out[i] = _grow_squares(seeds, sides).amax(0).bool() & brain[i]
    return out


def _grow_squares(seeds: torch.Tensor, sides: tuple[int, ...]) -> torch.Tensor:
    """Turn each seed pixel of channel c into a square of side ``sides[c]`` with its top-left corner at the seed."""
    h, w = seeds.shape[-2:]
    grown = []
    for channel, side in enumerate(sides):
        # Pad before the seed so that the max-pool window ending at a pixel sees seeds up to side-1 pixels back.
        padded = F.pad(seeds[channel][None, None], (side - 1, 0, side - 1, 0))
        grown.append(F.max_pool2d(padded, side, stride=1)[0, 0, :h, :w])
    return torch.stack(grown)
