"""Training data: healthy (or lesion-masked) cases (see :mod:`itermask.cases`) → normalised slices or volumes on the
model grid."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import itermask.geometry
import itermask.io
import itermask.normalize
import itermask.preprocess
from itermask.bundle import grid_divisor
from itermask.cases import Case, healthy_region, read_case
from itermask.metadata import Grid
from itermask.preprocess import prepare_volume

from .cache import cached_arrays, entry_key


@dataclass
class TrainingSet:
    """Training samples on the model grid, (N, *spatial): axial slices (N, H, W) for a 2D model, whole volumes
    (N, D, H, W) for a 3D model. ``image`` normalised; ``brain``; ``valid`` = brain minus lesion."""

    image: torch.Tensor
    brain: torch.Tensor
    valid: torch.Tensor

    def __len__(self) -> int:
        return self.image.shape[0]

    @property
    def dims(self) -> int:
        return self.image.dim() - 1


def prepare_case(case: Case, grid: Grid, dims: int, divisors: tuple[int, ...],
                 min_brain_pixels: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One case exactly as inference prepares it, as samples (N, *spatial): image, brain and valid (brain minus
    the lesion, see :func:`itermask.cases.healthy_region`). A 2D model gets the axial slices with at least ``min_brain_pixels``
    brain pixels, a 3D model the whole volume (N = 1)."""
    volumes = read_case(case)
    prepared = prepare_volume(volumes.image, volumes.affine, volumes.brain, grid, divisors)
    triple = (prepared.image, prepared.brain, healthy_region(prepared, volumes, dims))
    if dims == 2:
        keep = prepared.brain.sum(dim=(1, 2)) >= min_brain_pixels
        return tuple(v[keep] for v in triple)
    return tuple(v[None] for v in triple)


def prepared_cases(cases: list[Case], grid: Grid, dims: int, divisor: int, min_brain_pixels: int = 200,
                   cache: Path | None = None) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`prepare_case` of every case, read from the ``cache`` folder where it is there and stored there where it
    is not (see :mod:`.cache`), so later runs skip preprocessing."""
    divisors = grid_divisor(dims, divisor)
    settings = {"grid": grid.to_json(), "dims": dims, "divisors": list(divisors), "min_brain_pixels": min_brain_pixels}
    return [cached_arrays(cache, entry_key([case.image, case.brain_mask, case.lesion_mask], settings, CODE),
                          lambda case=case: prepare_case(case, grid, dims, divisors, min_brain_pixels))
            for case in cases]


def load_training_set(cases: list[Case], grid: Grid, dims: int, divisor: int,
                      min_brain_pixels: int = 200, cache: Path | None = None) -> TrainingSet:
    """Every case prepared (:func:`prepared_cases`), all zero-padded to one common shape (at least the grid's
    ``min_size``). The lesion is excluded from the loss and hidden from the model's input."""
    samples = prepared_cases(cases, grid, dims, divisor, min_brain_pixels, cache)
    shape = [max(m, *(s[0].shape[axis + 1] for s in samples)) for axis, m in enumerate(grid.min_size[3 - dims:])]
    return TrainingSet(*(torch.cat([pad_to(s[i], shape) for s in samples]) for i in range(3)))


# What a cached case depends on besides its files and settings.
CODE = [itermask.io, itermask.geometry, itermask.normalize, itermask.preprocess, read_case, healthy_region,
        prepare_case]


def pad_to(samples: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """(N, *spatial) → (N, *shape), zero-padded (False) around the centre."""
    out = torch.zeros((samples.shape[0], *shape), dtype=samples.dtype)
    region = tuple(slice((want - have) // 2, (want - have) // 2 + have) for have, want in zip(samples.shape[1:], shape))
    out[(slice(None), *region)] = samples
    return out
