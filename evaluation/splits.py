"""Which scans the validation scores, tunes on, holds out, or counts false positives on, per sequence.

- *validation* and *calibration*: the labelled rows of ``training/manifests/<modality>.csv`` (validation scans are
  scored; the labelled calibration scan only helps tune thresholds), plus the clinical MS patients assigned to
  validation below;
- *test*: clinical MS patients held out: scored with the choices the validation made, never used to make one;
- *healthy*: real healthy people's scans of the sequence that no bundle trained on (registry templates only where
  they are one real person's scan, and none of those is unused by training here). Every segmented millilitre in
  them is a false positive.

``../shared/data/ms_clinical_flair`` (9 patients, FLAIR and T2, 0.9 × 0.9 × 6.4–8.1 mm) is split by lesion load
alone, before any of them was segmented: sorted by lesion volume, the 1st, 3rd, 5th, 7th and 9th are held out
(test) and the 2nd, 4th, 6th and 8th join the validation split, so both halves span 3–28 ml.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from itermask.cases import Case, CaseVolumes, read_case, read_cases

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
MANIFESTS = REPO / "training" / "manifests"
ROLES = ("validation", "calibration", "test", "healthy")

# Lesion volumes (ml): 101627 3.2, 101228 4.3, 110218 14.5, 106639 16.0, 112776 16.1, 107130 17.3, 104670 23.0,
# 104899 24.7, 111008 28.0.
MS_CLINICAL_TEST = ("101627", "110218", "112776", "104670", "111008")
MS_CLINICAL_VALIDATION = ("101228", "106639", "107130", "104899")
MS_CLINICAL_SEQUENCES = {"flair": "FLAIR", "t2": "T2"}


@dataclass
class Scan:
    """One scan of the validation: ``source`` is a manifest :class:`Case` or anything with ``read()`` returning
    :class:`CaseVolumes`; ``role`` one of :data:`ROLES`; ``cohort`` the data set's folder (``ms*`` marks the
    small-lesion scans)."""

    name: str
    source: object
    role: str
    cohort: str

    def read(self) -> CaseVolumes:
        return read_case(self.source) if isinstance(self.source, Case) else self.source.read()

    @property
    def labelled(self) -> bool:
        return self.role != "healthy"


class VoxelmorphHealthyT1:
    """The healthy skull-stripped T1 shipped with voxelmorph's tests (no model saw it). The file stores no affine;
    its axes are FreeSurfer's conformed LIA at 1 mm (checked by eye: axis 1 runs head to feet, axis 2 back to
    front), which is what this affine says."""

    def read(self) -> CaseVolumes:
        image = np.load(DATA / "healthy" / "voxelmorph_test_scan" / "test_scan.npz")["vol"].astype(np.float32)
        lia = np.array([[-1.0, 0, 0, 80], [0, 0, 1, -112], [0, -1, 0, 96], [0, 0, 0, 1]])
        return CaseVolumes(image, lia, None, np.zeros(image.shape, bool))


def _cohort(path: Path) -> str:
    return path.parent.parent.name


def _healthy_extra(modality: str) -> list[Scan]:
    """Healthy scans outside the manifests (the manifests' unlabelled calibration scans are healthy too)."""
    if modality != "t1":
        return []
    forrest = DATA / "healthy" / "studyforrest_T1w"
    return [Scan("studyforrest", Case(forrest / "T1w.nii.gz", forrest / "T1w_brainmask_robex.nii.gz", None, "healthy"),
                 "healthy", "healthy"),
            Scan("voxelmorph", VoxelmorphHealthyT1(), "healthy", "healthy")]


def ms_clinical(modality: str) -> list[Scan]:
    """The clinical MS patients' scans of ``modality`` (FLAIR or T2), each with its role (see module doc)."""
    sequence = MS_CLINICAL_SEQUENCES.get(modality)
    if sequence is None:
        return []
    scans = []
    for role, ids in (("validation", MS_CLINICAL_VALIDATION), ("test", MS_CLINICAL_TEST)):
        for patient in ids:
            folder = DATA / "ms_clinical_flair" / patient
            case = Case(folder / f"{sequence}.nii.gz", folder / "brain_mask.nii.gz", folder / "lesion_mask.nii.gz", role)
            scans.append(Scan(f"ms{patient}", case, role, "ms_clinical_flair"))
    return scans


def manifest_scans(manifest: Path) -> list[Scan]:
    """The scans of a manifest the validation uses: its labelled validation and calibration rows in their role,
    and its unlabelled non-training rows as healthy scans."""
    scans = []
    for case in read_cases(manifest):
        if case.split == "train":
            continue
        role = case.split if case.lesion_mask else "healthy"
        scans.append(Scan(case.image.parent.name, case, role, _cohort(case.image)))
    return scans


def scans_of(modality: str, manifests: Path = MANIFESTS) -> list[Scan]:
    """Every scan the validation of ``modality`` (lower case, e.g. ``flair``) uses, with its role."""
    return manifest_scans(manifests / f"{modality}.csv") + ms_clinical(modality) + _healthy_extra(modality)
