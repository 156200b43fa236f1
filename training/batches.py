"""Training batches: random healthy slices or volumes, augmented, hidden under random Gaussian masks."""
from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from itermask.frequency import high_frequency
from itermask.masks import gaussian_cloud_masks_3d, gaussian_patch_masks

from .data import TrainingSet


def _augment(x: torch.Tensor, brain: torch.Tensor, valid: torch.Tensor, gen: torch.Generator):
    """Left-right flips (the last axis is R) and a small intensity gain/offset inside the brain."""
    per_sample = (x.shape[0],) + (1,) * (x.dim() - 1)
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).view(per_sample)
    x, brain, valid = (torch.where(flip, t.flip(-1), t) for t in (x, brain, valid))
    gain = 1 + 0.1 * (2 * torch.rand(per_sample, generator=gen) - 1)
    offset = 0.1 * (2 * torch.rand(per_sample, generator=gen) - 1)
    return torch.where(brain, x * gain + offset, torch.zeros(())), brain, valid


def random_masks(brain: torch.Tensor, metadata: dict, gen: torch.Generator) -> torch.Tensor:
    """The training masks the bundle ``metadata`` describes, for (N, H, W) slices or (N, D, H, W) volumes."""
    masks = metadata["masks"]
    if brain.dim() == 3:
        return gaussian_patch_masks(brain, gen, masks["patches"], tuple(masks["sides"]), masks["coarse_px"])
    cells = tuple(mm / metadata["grid"]["spacing_mm"] for mm in masks["cells_mm"])
    return gaussian_cloud_masks_3d(brain, gen, masks["points"], cells)


def coarse_noise(shape: tuple[int, ...], cell_px: float, sd: float, positive: bool,
                 gen: torch.Generator) -> torch.Tensor:
    """The DAE's corruption (Kascenas et al. 2022): Gaussian noise of standard deviation ``sd`` drawn on a grid
    ``cell_px`` voxels coarse and interpolated up to ``shape`` (N, 1, *spatial), so it looks like blobs rather than
    grain. ``positive`` keeps only its hyper-intense half ([0, +∞), the original DAE); otherwise it is signed."""
    spatial = shape[2:]
    coarse = [max(2, math.ceil(n / cell_px)) for n in spatial]
    noise = sd * torch.randn((shape[0], 1, *coarse), generator=gen)
    noise = F.interpolate(noise, size=spatial, mode="bilinear" if len(spatial) == 2 else "trilinear",
                          align_corners=False)
    return noise.clamp_min(0) if positive else noise


def training_batch(samples: TrainingSet, batch_size: int, metadata: dict, gen: torch.Generator,
                   index: torch.Tensor | None = None, augment: bool = True,
                   whole_brain_fraction: float | None = None) -> dict[str, torch.Tensor]:
    """One batch corrupted as the bundle ``metadata`` says: x, x_f, brain, valid, hidden, noise, all (B, 1, *spatial).

    IterMask hides random masks (``hidden``) under Gaussian ``noise``. A baseline reconstructs the whole brain
    (``hidden`` is the brain): the AE sees the image as it is, the DAE the image plus ``noise``, its coarse noise.
    ``index`` picks the samples (default: ``batch_size`` drawn at random); ``augment=False`` for calibration.
    ``whole_brain_fraction``: share of samples whose whole brain is hidden — a unified 3D model must also learn the
    first iteration (default: the bundle's ``masks.whole_brain_fraction``, 0 if absent; calibration passes 0).
    """
    idx = torch.randint(len(samples), (batch_size,), generator=gen) if index is None else index
    x, brain, valid = samples.image[idx], samples.brain[idx], samples.valid[idx]
    if augment:
        x, brain, valid = _augment(x, brain, valid, gen)
    method = metadata.get("method", {"name": "itermask"})
    if method["name"] == "itermask":
        hidden = random_masks(brain, metadata, gen)
        if whole_brain_fraction is None:
            whole_brain_fraction = metadata["masks"].get("whole_brain_fraction", 0.0)
        if whole_brain_fraction > 0:  # no draw otherwise, so 2D runs keep the random stream they always had
            whole = (torch.rand(len(idx), generator=gen) < whole_brain_fraction).view(-1, *(1,) * samples.dims)
            hidden = torch.where(whole, brain, hidden)
        hidden |= brain & ~valid  # a labelled lesion is never shown to the model
        noise = torch.randn(x.shape, generator=gen)
    else:
        hidden = brain.clone()
        noise = torch.zeros(x.shape)
        if method["name"] == "dae":
            cell_px = method["noise_cell_mm"] / metadata["grid"]["spacing_mm"]
            noise = brain * coarse_noise((len(idx), 1, *x.shape[1:]), cell_px, method["noise_sd"],
                                         method["noise"] == "positive", gen)[:, 0]
    batch = {"x": x, "brain": brain, "valid": valid, "hidden": hidden, "noise": noise}
    batch = {k: v[:, None] for k, v in batch.items()}
    freq = metadata["frequency"]
    batch["x_f"] = high_frequency(batch["x"], freq["radius"], samples.dims, freq["reference_size"])
    return batch
