"""Random training masks placed with a random anisotropic Gaussian density: clusters of square patches on slices
(IterMask²) and clouds of coarse cells in volumes (IterMask3D)."""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def random_rotation_2d(generator: torch.Generator) -> torch.Tensor:
    angle = torch.rand((), generator=generator) * math.pi
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s]), torch.stack([s, c])])


def random_rotation_3d(generator: torch.Generator) -> torch.Tensor:
    """A uniformly random 3×3 rotation (float64): QR of a Gaussian matrix with the signs fixed, determinant +1."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _random_centre_and_scale(inside: torch.Tensor, generator: torch.Generator, eigen_range: tuple[float, float],
                             unit: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A centre drawn among the ``inside`` indices (M, d) and the matrix ``S`` with ``S·Sᵀ = O·diag(λ)·Oᵀ·unit²``,
    λ ~ U(eigen_range), O a random rotation: ``centre + z @ S.T`` with z ~ N(0, I) samples the Gaussian."""
    dims = inside.shape[1]
    centre = inside[torch.randint(len(inside), (), generator=generator)].double()
    lam = eigen_range[0] + (eigen_range[1] - eigen_range[0]) * torch.rand(dims, generator=generator, dtype=torch.float64)
    rot = (random_rotation_2d(generator).double() if dims == 2 else random_rotation_3d(generator))
    return centre, rot @ torch.diag(lam.sqrt() * unit)


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
        centre, scale = _random_centre_and_scale(inside, generator, eigen_range, coarse)
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


def gaussian_cloud_masks_3d(brain: torch.Tensor, generator: torch.Generator, points: int = 100_000,
                            cells: tuple[float, ...] = (2.0, 4.0, 8.0),
                            eigen_range: tuple[float, float] = (0.3, 10.0)) -> torch.Tensor:
    """One random mask per volume, inside the brain (IterMask3D's training masks).

    Args:
        brain: (N, D, H, W) bool brain masks; a volume with no brain gets an empty mask.
        generator: the source of randomness (a fresh draw every call).
        points: Gaussian samples per mask (paper: 100,000).
        cells: coarse-cell sizes in voxels, one drawn per mask (paper: 1/2, 1/4, 1/8 of full resolution, i.e. 2, 4
            and 8 voxels at 1 mm). The covariance eigenvalues ``λ ~ U(eigen_range)`` are in cells², so a coarser cell
            also means a larger cloud.

    Returns:
        (N, D, H, W) bool masks, ``mask ⊆ brain``.

    Points ``centre + N(0, O·diag(λ)·Oᵀ)·cell²`` are binned into coarse cells; every cell a point falls in is hidden
    (marking the coarse grid and upsampling it). A point outside the volume is dropped — it never wraps around to
    the opposite side, as negative indices did in the reference code.

    >>> brain = torch.ones(1, 16, 16, 16, dtype=torch.bool)
    >>> m = gaussian_cloud_masks_3d(brain, torch.Generator().manual_seed(0), points=500)
    >>> bool(m.any()) and bool((m <= brain).all())
    True
    """
    n, *shape = brain.shape
    size = torch.tensor(shape)
    out = torch.zeros(brain.shape, dtype=torch.bool)
    for i in range(n):
        inside = brain[i].nonzero()
        if len(inside) == 0:
            continue
        cell = float(cells[int(torch.randint(len(cells), (), generator=generator))])
        centre, scale = _random_centre_and_scale(inside, generator, eigen_range, cell)
        cloud = (centre + torch.randn(points, 3, generator=generator, dtype=torch.float64) @ scale.T).round().long()
        cloud = cloud[((cloud >= 0) & (cloud < size)).all(dim=1)]
        step = max(1, round(cell))
        coarse = torch.zeros([math.ceil(s / step) for s in shape], dtype=torch.bool)
        coarse[tuple((cloud // step).T)] = True
        full = coarse.repeat_interleave(step, 0).repeat_interleave(step, 1).repeat_interleave(step, 2)
        out[i] = full[: shape[0], : shape[1], : shape[2]] & brain[i]
    return out
