"""Training batches: random healthy slices, augmented, hidden under random Gaussian patch masks."""
from __future__ import annotations

import torch

from itermask.frequency import high_frequency
from itermask.masks import gaussian_patch_masks

from .data import SliceSet


def _augment(x: torch.Tensor, brain: torch.Tensor, valid: torch.Tensor, gen: torch.Generator):
    """Left-right flips and a small intensity gain/offset inside the brain (healthy-set augmentation)."""
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x, brain, valid = (torch.where(flip[:, None, None], t.flip(-1), t) for t in (x, brain, valid))
    gain = 1 + 0.1 * (2 * torch.rand(x.shape[0], 1, 1, generator=gen) - 1)
    offset = 0.1 * (2 * torch.rand(x.shape[0], 1, 1, generator=gen) - 1)
    return torch.where(brain, x * gain + offset, torch.zeros(())), brain, valid


def training_batch(slices: SliceSet, batch_size: int, metadata: dict, gen: torch.Generator,
                   index: torch.Tensor | None = None, augment: bool = True) -> dict[str, torch.Tensor]:
    """One batch masked as the bundle ``metadata`` says: image, x_f, brain, valid, hidden, noise, all (B, 1, H, W).

    ``index`` picks the slices (default: ``batch_size`` drawn at random); ``augment=False`` for calibration.
    """
    idx = torch.randint(len(slices), (batch_size,), generator=gen) if index is None else index
    x, brain, valid = slices.image[idx], slices.brain[idx], slices.valid[idx]
    if augment:
        x, brain, valid = _augment(x, brain, valid, gen)
    masks, freq = metadata["masks"], metadata["frequency"]
    hidden = gaussian_patch_masks(brain, gen, masks["patches"], tuple(masks["sides"]), masks["coarse_px"])
    hidden |= brain & ~valid  # a labelled lesion is never shown to the model
    batch = {"x": x, "brain": brain, "valid": valid, "hidden": hidden,
             "noise": torch.randn(x.shape, generator=gen)}
    batch = {k: v[:, None] for k, v in batch.items()}
    batch["x_f"] = high_frequency(batch["x"], freq["radius"], 2, freq["reference_size"])
    return batch
