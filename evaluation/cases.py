"""Labelled cases on disk: a folder per case holding the scan, an optional brain mask and the lesion label."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from itermask.cases import Case, CaseVolumes, read_case
from itermask.errors import ItermaskError
from itermask.io import SUFFIXES, scan_stem


@dataclass
class LabelledCase:
    name: str
    image: Path
    brain_mask: Path | None
    label: Path

    def read(self) -> CaseVolumes:
        """The scan, its affine, its brain mask placed on the scan by its own geometry (None: the non-zero region)
        and the label (any non-zero voxel), which is scored voxel by voxel and so must be on the scan's grid."""
        volumes = read_case(Case(self.image, self.brain_mask, self.label, "validation"))
        if volumes.lesion.shape != volumes.image.shape:
            raise ItermaskError(f"{self.label}: label shape {volumes.lesion.shape} differs from the scan's "
                                f"{volumes.image.shape}")
        return volumes


def _named(folder: Path, name: str) -> Path | None:
    """The file ``<name>.<image suffix>`` in ``folder``, if there is one."""
    found = [f for f in sorted(folder.iterdir()) if f.name.lower().endswith(SUFFIXES) and scan_stem(f) == name]
    return found[0] if found else None


def find_cases(paths: list[Path], image_name: str, label_name: str, brain_name: str | None) -> list[LabelledCase]:
    """Cases from folders: each path is a case folder (it holds ``<image_name>.nii.gz`` or another image suffix) or a
    folder of case folders. ``brain_name`` None or empty: the scans are skull-stripped. A folder without the scan is
    skipped; a case without its label (or named brain mask) is an error, since scoring it would be meaningless."""
    folders = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise ItermaskError(f"{path} is not a folder of a labelled case")
        folders += [path] if _named(path, image_name) else sorted(p for p in path.iterdir() if p.is_dir())
    cases = []
    for folder in folders:
        image = _named(folder, image_name)
        if image is None:
            continue
        label = _named(folder, label_name)
        brain = _named(folder, brain_name) if brain_name else None
        if label is None or (brain_name and brain is None):
            missing = label_name if label is None else brain_name
            raise ItermaskError(f"{folder}: has {image.name} but no {missing} file")
        cases.append(LabelledCase(folder.name, image, brain, label))
    if not cases:
        raise ItermaskError(f"no case with a '{image_name}' scan found in {', '.join(map(str, paths))}")
    return cases
