"""Intensity normalisation inside the brain (IterMask3D's iterative z-score)."""
from __future__ import annotations

import torch


def iterative_zscore(image: torch.Tensor, brain: torch.Tensor, rounds: int = 4, clip_sd: float = 2.0) -> torch.Tensor:
    """Z-score ``image`` with a mean and SD estimated robustly inside ``brain``; zero outside the brain.

    Round 1 uses every brain voxel; each further round uses only the brain voxels within ±``clip_sd`` SD of the
    current estimate, so bright lesions and dark CSF do not drag the statistics (IterMask3D, Preprocessing).

    >>> img = torch.tensor([1.0, 2.0, 3.0, 100.0]); brain = torch.tensor([True, True, True, False])
    >>> iterative_zscore(img, brain)[3].item()
    0.0
    """
    values = image[brain].double()
    mean, sd = values.mean(), values.std()
    for _ in range(rounds - 1):
        inliers = values[(values - mean).abs() <= clip_sd * sd]
        if inliers.numel() < 2:
            break
        mean, sd = inliers.mean(), inliers.std()
    sd = sd if sd > 0 else torch.ones_like(sd)
    return torch.where(brain, (image - mean.float()) / sd.float(), torch.zeros_like(image))
