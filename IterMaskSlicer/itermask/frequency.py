"""High-frequency image ``x_f``: low-frequency amplitude removed, all phase kept (IterMask² eq. 1)."""
from __future__ import annotations

import torch


def high_pass_mask(shape: tuple[int, ...], radius: float, reference_size: int) -> torch.Tensor:
    """Boolean mask over a centred spectrum: True where a frequency lies outside the disc/sphere of ``radius``.

    Distances are measured in index units of a square grid of side ``reference_size`` (the grid the radius was set
    on), so a model used on a larger or non-square grid removes the same band of physical frequencies.
    """
    axes = [(torch.arange(n) - n // 2) * (reference_size / n) for n in shape]
    grids = torch.meshgrid(*axes, indexing="ij")
    return sum(g**2 for g in grids) > radius**2


def high_frequency(x: torch.Tensor, radius: float, spatial_dims: int, reference_size: int | None = None) -> torch.Tensor:
    """Return ``x_f`` for every image in a batch.

    Args:
        x: (N, C, *spatial) float tensor; the last ``spatial_dims`` axes are transformed.
        radius: disc radius in frequency-index units of the reference grid (paper: 15 on 128²).
        spatial_dims: 2 for slices, 3 for volumes.
        reference_size: side of the grid ``radius`` refers to; defaults to the first spatial size.

    Zeroing the amplitude ``A`` inside the disc while keeping the phase ``φ`` is ``A·N·exp(jφ) = F·N``.

    >>> x = torch.ones(1, 1, 32, 32)          # a constant image is pure zero frequency
    >>> float(high_frequency(x, 4, 2).abs().max()) < 1e-5
    True
    """
    dims = tuple(range(-spatial_dims, 0))
    shape = tuple(x.shape[-spatial_dims:])
    keep = high_pass_mask(shape, radius, reference_size or shape[0]).to(x.device)
    spectrum = torch.fft.fftshift(torch.fft.fftn(x, dim=dims), dim=dims)
    filtered = torch.fft.ifftshift(spectrum * keep, dim=dims)
    return torch.fft.ifftn(filtered, dim=dims).real.to(x.dtype)
