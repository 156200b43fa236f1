"""Finding the scans of one modality in the folder layouts people have (for training and calibration cases), and
saying what was skipped and why.

Layouts, recognised in this order:

- **BIDS**: ``sub-*/[ses-*/]anat/sub-*_<SUFFIX>.nii.gz``; masks from ``derivatives/*/sub-*/…`` with the same
  entities and ``_desc-brain_mask`` / ``_label-lesion_mask`` (or ``_desc-lesion_mask``).
- **BraTS**: one folder per case holding ``<case>_<seq>.nii.gz`` (``flair``, ``t1``, ``t1ce``, ``t2``) and
  ``<case>_seg.nii.gz``.
- **IXI**: ``IXI<id>-<site>-<n>-<SEQ>.nii.gz`` in one folder (``T1``, ``T2``, ``PD``; no FLAIR in IXI), optional
  ``…-<SEQ>_brainmask.nii.gz``.
- **flat**: any other folder of scans, ``<name>_brainmask`` / ``<name>_lesion`` beside ``<name>``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .metadata import check_modality
from .io import SUFFIXES, scan_stem

# File-name spellings of each modality per layout.
BIDS_SUFFIX = {"FLAIR": "FLAIR", "T1": "T1w", "T1CE": "T1w", "T2": "T2w"}
BRATS_SEQUENCE = {"FLAIR": ("flair",), "T1": ("t1", "t1n"), "T1CE": ("t1ce", "t1c"), "T2": ("t2", "t2w")}
IXI_PATTERN = re.compile(r"^(IXI\d+)-[A-Za-z]+-\d+-(T1|T2|PD|MRA|DTI)$")


@dataclass
class Found:
    """One scan: its subject, the image, and the brain and lesion masks that were found (None when absent)."""

    subject: str
    image: Path
    brain_mask: Path | None = None
    lesion_mask: Path | None = None


@dataclass
class Discovery:
    layout: str
    found: list[Found] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def report(self) -> str:
        """What a person reads before a long run: the layout, counts, and every skipped path with its reason."""
        lines = [f"{self.layout} layout: {len(self.found)} scans "
                 f"({sum(f.brain_mask is not None for f in self.found)} with a brain mask, "
                 f"{sum(f.lesion_mask is not None for f in self.found)} with a lesion mask), "
                 f"{len(self.skipped)} skipped"]
        lines += [f"  skipped {path}: {why}" for path, why in self.skipped]
        return "\n".join(lines)


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.name.lower().endswith(SUFFIXES))


def discover(root: str | Path, modality: str | None) -> Discovery:
    """The scans of ``modality`` under ``root``, in whichever layout it uses (without a modality: a flat folder)."""
    root = Path(root)
    if modality is None:
        return _flat(_images(root))
    modality = check_modality(modality)
    if (root / "dataset_description.json").exists() or any(root.glob("sub-*")):
        return _bids(root, modality)
    case_folders = [d for d in sorted(root.iterdir()) if d.is_dir()]
    if case_folders and all(any(scan_stem(f).lower().endswith("_seg") for f in _images(d)) or not _images(d)
                            for d in case_folders):
        return _brats(case_folders, modality)
    files = _images(root)
    if any(IXI_PATTERN.match(scan_stem(f)) for f in files):
        return _ixi(files, modality)
    return _flat(files)


def _bids(root: Path, modality: str) -> Discovery:
    out = Discovery("BIDS")
    suffix = BIDS_SUFFIX[modality]
    derivatives = [f for f in root.glob("derivatives/**/*") if f.is_file() and f.name.lower().endswith(SUFFIXES)]
    for image in sorted(root.glob("sub-*/**/anat/*")):
        if not image.name.lower().endswith(SUFFIXES) or not scan_stem(image).endswith(f"_{suffix}"):
            continue
        entities = scan_stem(image)[: -len(suffix) - 1]
        if modality == "T1CE" and "_ce-" not in entities:
            out.skipped.append((image, "a T1w without a contrast entity (ce-…) is not T1CE"))
            continue
        if modality == "T1" and "_ce-" in entities:
            continue
        masks = {}
        for key, names in (("brain_mask", ("_desc-brain_mask",)), ("lesion_mask", ("_label-lesion_mask",
                                                                                   "_desc-lesion_mask"))):
            hits = [d for d in derivatives if scan_stem(d).startswith(entities) and
                    scan_stem(d).endswith(names)]
            masks[key] = hits[0] if hits else None
        out.found.append(Found(entities.split("_")[0], image, **masks))
    return out


def _brats(case_folders: list[Path], modality: str) -> Discovery:
    out = Discovery("BraTS")
    for folder in case_folders:
        images = {scan_stem(f).lower(): f for f in _images(folder)}
        scan = next((images[k] for k in images for seq in BRATS_SEQUENCE[modality] if k.endswith(f"_{seq}")), None)
        seg = next((images[k] for k in images if k.endswith("_seg")), None)
        if scan is None:
            out.skipped.append((folder, f"no *_{'/'.join(BRATS_SEQUENCE[modality])} scan"))
            continue
        out.found.append(Found(folder.name, scan, None, seg))
    return out


def _ixi(files: list[Path], modality: str) -> Discovery:
    out = Discovery("IXI")
    stems = {scan_stem(f): f for f in files}
    for stem, path in stems.items():
        match = IXI_PATTERN.match(stem)
        if match is None:
            if not stem.endswith("_brainmask"):
                out.skipped.append((path, "not an IXI scan name (IXI<id>-<site>-<n>-<SEQ>)"))
            continue
        if match.group(2) != modality:
            continue
        out.found.append(Found(match.group(1), path, stems.get(stem + "_brainmask")))
    if modality == "FLAIR":
        out.skipped.append((files[0].parent, "IXI has no FLAIR scans"))
    return out


def _flat(files: list[Path]) -> Discovery:
    out = Discovery("flat")
    stems = {scan_stem(f): f for f in files}
    for stem, path in stems.items():
        if stem.endswith(("_brainmask", "_lesion")):
            if stem.rsplit("_", 1)[0] not in stems:
                out.skipped.append((path, "a mask without its scan"))
            continue
        out.found.append(Found(stem, path, stems.get(stem + "_brainmask"), stems.get(stem + "_lesion")))
    return out
