"""Cases on disk — a scan with its brain and lesion masks — as training, calibration and evaluation read them:
from a CSV manifest or a folder of scans, each mask placed on the scan by its own geometry."""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from .errors import ItermaskError
from .io import read_volume
from .preprocess import PreparedVolume, mask_on_image_grid
from .scan_layouts import discover

SPLITS = ("train", "calibration", "validation")
MANIFEST_COLUMNS = ("image", "brain_mask", "lesion_mask", "split")


@dataclass
class Case:
    image: Path
    brain_mask: Path | None
    lesion_mask: Path | None
    split: str


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

    A folder may be laid out as BIDS, BraTS or IXI (found with :func:`~.scan_layouts.discover`; these need the
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


def as_listed(path: Path, manifest: str | Path) -> str:
    """A case path as the manifest lists it (relative to the manifest), for a bundle's provenance."""
    return os.path.normpath(os.path.relpath(path, Path(manifest).parent))


@dataclass
class CaseVolumes:
    """One case read from disk: image (i, j, k), its affine, and brain and lesion masks (None when not given)."""

    image: np.ndarray
    affine: np.ndarray
    brain: np.ndarray | None
    lesion: np.ndarray | None


def read_case(case: Case) -> CaseVolumes:
    """The scan, its affine (voxel → RAS mm), its brain mask on the scan's grid (placed by the mask's own geometry,
    as ``itermask segment --brain-mask`` places it; None: not given) and the lesion mask (any non-zero voxel)."""
    image, affine = read_volume(case.image)
    brain = mask_on_image_grid(*read_volume(case.brain_mask), image.shape[:3], affine) if case.brain_mask else None
    lesion = np.asarray(read_volume(case.lesion_mask)[0]) > 0 if case.lesion_mask else None
    return CaseVolumes(image, affine, brain, lesion)


def healthy_region(prepared: PreparedVolume, volumes: CaseVolumes, dims: int = 2, margin: int = 2) -> torch.Tensor:
    """Brain minus the lesion on the model grid (z, y, x) bool, the lesion dilated by ``margin`` voxels (in-plane for
    a 2D model, in 3D for a 3D one) because lesion borders are rarely labelled tightly."""
    if volumes.lesion is None:
        return prepared.brain.clone()
    lesion = (prepared.grid.from_input(volumes.lesion, volumes.affine) > 0.1).float()
    k = 2 * margin + 1
    if dims == 2:
        lesion = F.max_pool2d(lesion[:, None], k, stride=1, padding=margin)[:, 0]
    else:
        lesion = F.max_pool3d(lesion[None, None], k, stride=1, padding=margin)[0, 0]
    return prepared.brain & ~(lesion > 0)
