"""Training data: a manifest of healthy (or lesion-masked) scans → normalised slices or volumes on the model grid."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

import itermask.geometry
import itermask.io
import itermask.normalize
import itermask.preprocess
from itermask.bundle import grid_divisor
from itermask.errors import ItermaskError
from itermask.io import read_volume
from itermask.preprocess import PreparedVolume, mask_on_image_grid, prepare_volume

from .cache import cached_arrays, entry_key
from .discovery import discover

SPLITS = ("train", "calibration", "validation")


@dataclass
class Case:
    image: Path
    brain_mask: Path | None
    lesion_mask: Path | None
    split: str


MANIFEST_COLUMNS = ("image", "brain_mask", "lesion_mask", "split")


def read_manifest(path: str | Path) -> list[Case]:
    """Cases from a CSV with columns ``image, brain_mask, lesion_mask, split``; paths relative to the CSV.

    ``brain_mask`` and ``lesion_mask`` may be empty; ``split`` is ``train``, ``calibration`` (held-out healthy
    data used only to set τ and the segmentation threshold) or ``validation`` (labelled scans that neither training
    nor calibration touches; the benchmark chooses a bundle's defaults on them). Every file listed must exist: a
    missing one is reported now, not after preparing the others.
    """
    path = Path(path)
    if not path.is_file():
        raise ItermaskError(f"{path} is neither a folder of scans nor a CSV manifest (not found)")
    base = path.parent
    cases = []
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            unknown = set(reader.fieldnames or ()) - set(MANIFEST_COLUMNS)
            if "image" not in (reader.fieldnames or ()) or unknown:
                raise ItermaskError(f"{path}: the columns must be {','.join(MANIFEST_COLUMNS)} (image required), got "
                                    f"{','.join(reader.fieldnames or ()) or 'none'}")
            for line, row in enumerate(reader, start=2):
                cases.append(_case_of_row(row, base, f"{path}, line {line}"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ItermaskError(f"cannot read {path} as a CSV manifest ({type(exc).__name__})") from None
    if not cases:
        raise ItermaskError(f"{path}: no cases listed")
    missing = [f for c in cases for f in (c.image, c.brain_mask, c.lesion_mask) if f is not None and not f.is_file()]
    if missing:
        raise ItermaskError(f"{path}: {len(missing)} listed file(s) not found, first {missing[0]}")
    return cases


def _case_of_row(row: dict, base: Path, where: str) -> Case:
    split = (row.get("split") or "train").strip()
    if split not in SPLITS:
        raise ItermaskError(f"{where}: split must be one of {SPLITS}, got {split!r}")
    listed = {k: (base / row[k].strip() if (row.get(k) or "").strip() else None) for k in MANIFEST_COLUMNS[:3]}
    if listed["image"] is None:
        raise ItermaskError(f"{where}: no image")
    return Case(listed["image"], listed["brain_mask"], listed["lesion_mask"], split)


def read_cases(path: str | Path, modality: str | None = None, calibration_fraction: float = 0.2,
               report=None) -> list[Case]:
    """Cases from a CSV manifest (see :func:`read_manifest`) or from a folder of scans.

    A folder may be laid out as BIDS, BraTS or IXI (found with :func:`~.discovery.discover`; these need the
    ``modality``) or be a flat folder where ``<name>_brainmask.*`` and ``<name>_lesion.*`` lie beside ``<name>``.
    The last ``calibration_fraction`` of the scans in name order (at least one) are held out for calibration.
    ``report``: called with the discovery's account of what was found and skipped (e.g. ``print``).
    """
    path = Path(path)
    if not path.is_dir():
        return read_manifest(path)
    found = discover(path, modality)
    if report is not None:
        report(found.report())
    scans = found.found
    if len(scans) < 2:
        raise ItermaskError(f"{path}: need at least two scans (one is held out for calibration), found {len(scans)}")
    held_out = max(1, round(calibration_fraction * len(scans)))
    return [Case(f.image, f.brain_mask, f.lesion_mask, "calibration" if i >= len(scans) - held_out else "train")
            for i, f in enumerate(scans)]


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


@dataclass
class CaseVolumes:
    """One case read from disk: image (i, j, k), its affine, and brain and lesion masks (None when not given)."""

    image: np.ndarray
    affine: np.ndarray
    brain: np.ndarray | None
    lesion: np.ndarray | None


def read_case(case: Case) -> CaseVolumes:
    image, affine = read_volume(case.image)
    brain = mask_on_image_grid(*read_volume(case.brain_mask), image.shape[:3], affine) if case.brain_mask else None
    lesion = np.asarray(read_volume(case.lesion_mask)[0]) > 0 if case.lesion_mask else None
    return CaseVolumes(image, affine, brain, lesion)


def healthy_region(prepared: PreparedVolume, volumes: CaseVolumes, dims: int = 2, margin: int = 2) -> torch.Tensor:
    """Brain minus the lesion on the model grid (z, y, x), the lesion dilated by ``margin`` voxels (in-plane for a
    2D model, in 3D for a 3D one) because lesion borders are rarely labelled tightly."""
    if volumes.lesion is None:
        return prepared.brain.clone()
    lesion = (prepared.grid.from_input(volumes.lesion, volumes.affine) > 0.1).float()
    k = 2 * margin + 1
    if dims == 2:
        lesion = F.max_pool2d(lesion[:, None], k, stride=1, padding=margin)[:, 0]
    else:
        lesion = F.max_pool3d(lesion[None, None], k, stride=1, padding=margin)[0, 0]
    return prepared.brain & ~(lesion > 0)


def prepare_case(case: Case, grid_config: dict, dims: int, divisors: tuple[int, ...],
                 min_brain_pixels: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One case exactly as inference prepares it, as samples (N, *spatial): image, brain and valid (brain minus
    the lesion, see :func:`healthy_region`). A 2D model gets the axial slices with at least ``min_brain_pixels``
    brain pixels, a 3D model the whole volume (N = 1)."""
    volumes = read_case(case)
    prepared = prepare_volume(volumes.image, volumes.affine, volumes.brain, grid_config, divisors)
    triple = (prepared.image, prepared.brain, healthy_region(prepared, volumes, dims))
    if dims == 2:
        keep = prepared.brain.sum(dim=(1, 2)) >= min_brain_pixels
        return tuple(v[keep] for v in triple)
    return tuple(v[None] for v in triple)


def prepared_cases(cases: list[Case], grid_config: dict, dims: int, divisor: int, min_brain_pixels: int = 200,
                   cache: Path | None = None) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:func:`prepare_case` of every case, read from the ``cache`` folder where it is there and stored there where it
    is not (see :mod:`.cache`), so later runs skip preprocessing."""
    divisors = grid_divisor(dims, divisor)
    settings = {"grid": grid_config, "dims": dims, "divisors": list(divisors), "min_brain_pixels": min_brain_pixels}
    return [cached_arrays(cache, entry_key([case.image, case.brain_mask, case.lesion_mask], settings, CODE),
                          lambda case=case: prepare_case(case, grid_config, dims, divisors, min_brain_pixels))
            for case in cases]


def load_training_set(cases: list[Case], grid_config: dict, dims: int, divisor: int,
                      min_brain_pixels: int = 200, cache: Path | None = None) -> TrainingSet:
    """Every case prepared (:func:`prepared_cases`), all zero-padded to one common shape (at least the grid's
    ``min_size``). The lesion is excluded from the loss and hidden from the model's input."""
    samples = prepared_cases(cases, grid_config, dims, divisor, min_brain_pixels, cache)
    shape = [max(m, *(s[0].shape[axis + 1] for s in samples))
             for axis, m in enumerate(grid_config["min_size"][3 - dims:])]
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
