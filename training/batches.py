"""Training batches: random healthy slices or volumes, augmented, hidden under random Gaussian masks."""
from __future__ import annotations

import numpy as np
import torch

from itermask.frequency import high_frequency
from itermask.metadata import BundleMetadata

from .augment import random_augmentation, smooth_random_field
from .data import TrainingSet
from .masks import gaussian_cloud_masks_3d, gaussian_patch_masks


def random_masks(brain: torch.Tensor, metadata: BundleMetadata, gen: torch.Generator) -> torch.Tensor:
    """The training masks the bundle ``metadata`` describes, for (N, H, W) slices or (N, D, H, W) volumes."""
    masks = metadata.masks
    if brain.dim() == 3:
        return gaussian_patch_masks(brain, gen, masks.patches, masks.sides, masks.coarse_px)
    cells = tuple(mm / metadata.grid.spacing_mm for mm in masks.cells_mm)
    return gaussian_cloud_masks_3d(brain, gen, masks.points, cells)


def training_batch(samples: TrainingSet, batch_size: int, metadata: BundleMetadata, gen: torch.Generator,
                   index: torch.Tensor | None = None, augment: bool = True,
                   whole_brain_fraction: float | None = None) -> dict[str, torch.Tensor]:
    """One batch corrupted as the bundle ``metadata`` says: x, x_f, brain, valid, hidden, noise, all (B, 1, *spatial).

    IterMask hides random masks (``hidden``) under Gaussian ``noise``. A baseline reconstructs the whole brain
    (``hidden`` is the brain): the AE sees the image as it is, the DAE the image plus ``noise``, its coarse noise.
    ``index`` picks the samples (default: ``batch_size`` drawn at random); ``augment=False`` for calibration.
    ``whole_brain_fraction``: share of samples whose whole brain is hidden — a unified 3D model must also learn the
    first iteration (default: the bundle's ``masks.whole_brain_fraction``, 0 in 2D; calibration passes 0).
    """
    idx = torch.randint(len(samples), (batch_size,), generator=gen) if index is None else index
    x, brain, valid = samples.image[idx], samples.brain[idx], samples.valid[idx]
    if augment:
        x, brain, valid = random_augmentation(x, brain, valid, gen, metadata.grid.spacing_mm)
    method = metadata.method
    if method.name == "itermask":
        hidden = random_masks(brain, metadata, gen)
        if whole_brain_fraction is None:
            whole_brain_fraction = metadata.masks.whole_brain_fraction
        if whole_brain_fraction > 0:  # no draw when no sample can be wholly hidden (2D models, calibration)
            whole = (torch.rand(len(idx), generator=gen) < whole_brain_fraction).view(-1, *(1,) * samples.dims)
            hidden = torch.where(whole, brain, hidden)
        hidden |= brain & ~valid  # a labelled lesion is never shown to the model
        noise = torch.randn(x.shape, generator=gen)
    else:
        hidden = brain.clone()
        noise = torch.zeros(x.shape)
        if method.name == "dae":
            cell_px = method.noise_cell_mm / metadata.grid.spacing_mm
            # Kascenas et al. 2022: coarse Gaussian noise; the original DAE keeps only its hyper-intense half
            noise = smooth_random_field((len(idx), 1, *x.shape[1:]), cell_px, method.noise_sd, gen)[:, 0]
            noise = brain * (noise.clamp_min(0) if method.noise == "positive" else noise)
    batch = {"x": x, "brain": brain, "valid": valid, "hidden": hidden, "noise": noise}
    batch = {k: v[:, None] for k, v in batch.items()}
    freq = metadata.frequency
    batch["x_f"] = high_frequency(batch["x"], freq.radius, samples.dims, freq.reference_size)
    return batch


def sample_generator(seed: int, step: int, index: int) -> torch.Generator:
    """The random source of sample ``index`` of the batch of ``step``: each sample's own, so a batch is the same
    whether one process builds it or several build shares of it, and a resumed run needs no saved random state."""
    state = np.random.SeedSequence([seed, step, index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) >> 1)


def step_batch(samples: TrainingSet, batch_size: int, metadata: BundleMetadata, seed: int, step: int, rank: int = 0,
               world: int = 1, augment: bool = True) -> dict[str, torch.Tensor]:
    """This process's share of the ``batch_size`` samples of ``step`` (samples ``rank``, ``rank + world``, …), each
    drawn, augmented and hidden as :func:`training_batch` does with :func:`sample_generator`."""
    parts = [training_batch(samples, 1, metadata, sample_generator(seed, step, i), augment=augment)
             for i in range(rank, batch_size, world)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
