"""Synthetic anomalies on real scans: acquisition artifacts for scan-level detection (IterMask3D Table 1) and
lesions with exact masks for segmentation.

Every generator takes a scan (i, j, k), its brain mask and affine (voxel → RAS mm), returns a new array and
leaves its input untouched. Intensities are set relative to the brain's own mean and SD, so the same settings
suit any scanner scale. Randomness comes only from ``seed``: the same seed gives the same scan.
"""
from __future__ import annotations

import numpy as np

ARTIFACTS = ("gaussian_noise", "missing_chunk_middle", "missing_chunk_top", "ring", "periodic_lines")


def _brain_stats(image: np.ndarray, brain: np.ndarray) -> tuple[float, float]:
    values = image[brain].astype(float)
    return float(values.mean()), float(values.std())


def _background_value(image: np.ndarray, brain: np.ndarray) -> float:
    """What air looks like in this scan: the median outside the brain (0 for a skull-stripped scan)."""
    outside = image[~brain]
    return float(np.median(outside)) if outside.size else 0.0


def voxel_ras_mm(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """RAS mm of every voxel of a grid of ``shape`` with this ``affine``, (*shape, 3)."""
    index = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).astype(float)
    return index @ affine[:3, :3].T + affine[:3, 3]


def gaussian_noise(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, seed: int = 0,
                   sd_fraction: float = 0.3) -> np.ndarray:
    """White Gaussian noise of ``sd_fraction`` × the brain's SD added to every brain voxel."""
    rng = np.random.default_rng(seed)
    _, sd = _brain_stats(image, brain)
    return np.where(brain, image + rng.normal(0, sd_fraction * sd, image.shape), image).astype(image.dtype)


def missing_chunk(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, where: str = "middle",
                  fraction: float = 0.3) -> np.ndarray:
    """A block of brain replaced by air (the scan's background value), the brain mask unchanged.

    ``middle``: a box around the brain's centre, ``fraction`` of the brain's extent along every RAS axis;
    ``top``: the superior ``fraction`` of the brain's height.
    """
    ras = voxel_ras_mm(image.shape, affine)
    inside = ras[brain]
    low, high = inside.min(axis=0), inside.max(axis=0)
    if where == "middle":
        centre, half = (low + high) / 2, fraction * (high - low) / 2
        block = np.all(np.abs(ras - centre) <= half, axis=-1)
    elif where == "top":
        block = ras[..., 2] >= high[2] - fraction * (high[2] - low[2])
    else:
        raise ValueError(f"where must be 'middle' or 'top', got {where!r}")
    return np.where(brain & block, _background_value(image, brain), image).astype(image.dtype)


def ring(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, seed: int = 0, period_mm: float = 8.0,
         radius_mm: float = 40.0, amplitude: float = 1.0) -> np.ndarray:
    """Concentric spherical ripples (``amplitude`` × brain SD, ``period_mm`` apart) within ``radius_mm`` of a random
    brain voxel: a circular artifact that breaks the anatomy without changing the mean intensity much."""
    rng = np.random.default_rng(seed)
    _, sd = _brain_stats(image, brain)
    ras = voxel_ras_mm(image.shape, affine)
    centre = ras[brain][rng.integers(int(brain.sum()))]
    r = np.linalg.norm(ras - centre, axis=-1)
    ripple = amplitude * sd * np.sin(2 * np.pi * r / period_mm) * (r <= radius_mm)
    return np.where(brain, image + ripple, image).astype(image.dtype)


def periodic_lines(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, seed: int = 0,
                   period_mm: float = 6.0, amplitude: float = 0.7) -> np.ndarray:
    """Parallel stripes (``amplitude`` × brain SD, ``period_mm`` apart) across the whole brain along a random
    direction in the axial plane, like the line pattern of a spike in k-space."""
    rng = np.random.default_rng(seed)
    _, sd = _brain_stats(image, brain)
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle), 0.0])
    along = voxel_ras_mm(image.shape, affine) @ direction
    return np.where(brain, image + amplitude * sd * np.sin(2 * np.pi * along / period_mm), image).astype(image.dtype)


def apply_artifact(name: str, image: np.ndarray, brain: np.ndarray, affine: np.ndarray, seed: int = 0) -> np.ndarray:
    """One of :data:`ARTIFACTS` by name, with its default settings."""
    generators = {"gaussian_noise": lambda: gaussian_noise(image, brain, affine, seed),
                  "missing_chunk_middle": lambda: missing_chunk(image, brain, affine, "middle"),
                  "missing_chunk_top": lambda: missing_chunk(image, brain, affine, "top"),
                  "ring": lambda: ring(image, brain, affine, seed),
                  "periodic_lines": lambda: periodic_lines(image, brain, affine, seed)}
    if name not in generators:
        raise ValueError(f"unknown artifact {name!r} (choose from {', '.join(ARTIFACTS)})")
    return generators[name]()


def insert_lesion(image: np.ndarray, brain: np.ndarray, affine: np.ndarray, seed: int = 0, kind: str = "hyper",
                  radius_mm: float = 12.0, contrast: float = 2.5, margin_mm: float = 6.0):
    """A synthetic lesion: a randomly oriented ellipsoid (semi-axes 0.6–1.4 × ``radius_mm``) wholly inside the brain,
    at least ``margin_mm`` from its edge, shifted by ``contrast`` × brain SD (``hyper``: brighter, ``hypo``: darker)
    so the tissue texture under it survives. Returns ``(image, mask)``; the mask is exactly the changed voxels.

    Raises ValueError when the brain has no room for the lesion.
    """
    if kind not in ("hyper", "hypo"):
        raise ValueError(f"kind must be 'hyper' or 'hypo', got {kind!r}")
    rng = np.random.default_rng(seed)
    _, sd = _brain_stats(image, brain)
    ras = voxel_ras_mm(image.shape, affine)
    axes = radius_mm * rng.uniform(0.6, 1.4, 3)
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    room = _distance_inside_mm(brain, affine) >= axes.max() + margin_mm
    if not room.any():
        raise ValueError(f"no place in the brain for a lesion of radius {axes.max():.0f} mm")
    centres = ras[room]
    centre = centres[rng.integers(len(centres))]
    local = (ras - centre) @ rotation
    mask = (np.sum((local / axes) ** 2, axis=-1) <= 1.0) & brain
    shift = (1 if kind == "hyper" else -1) * contrast * sd
    return np.where(mask, image + shift, image).astype(image.dtype), mask


def _distance_inside_mm(brain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Distance (mm) of each brain voxel to the nearest voxel outside the brain."""
    from scipy.ndimage import distance_transform_edt

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return distance_transform_edt(np.pad(brain, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
