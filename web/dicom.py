"""DICOM on the page: a series in, zipped or as a folder on the command line (read by :mod:`itermask.dicom`, as the
CLI reads a folder), its result out as a DICOM SEG written by :func:`itermask.dicom_seg.write_dicom_seg`, the CLI's
writer.

The page opens the series' volume as a NIfTI file (Slicer's volume reader keeps its grid) and keeps the series'
headers, which the SEG copies and references; the unpacked files are deleted once read.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from itermask.dicom import find_series, read_series
from itermask.dicom_seg import SEG_FILE, write_dicom_seg
from itermask.errors import ItermaskError
from itermask.io import write_nifti
from IterMaskSlicerLib import nodes

from .files import Scan


def volume_of_series(source: Path, name: str, folder: Path) -> Scan:
    """The one series under ``source`` (an unpacked zip, or a folder named on the command line: shown as ``name``)
    that is a 3D volume, as ``folder/<series name>.nii.gz``; a one-line error if there is none (saying why each series
    is not one) or several (listing them)."""
    volumes, refused = [], []
    for series in find_series(source):
        try:
            volumes.append((series, *read_series(series)))
        except ItermaskError as exc:
            refused.append(f'{series.number} "{series.description}": {exc}')
    if len(volumes) > 1:
        listed = "; ".join(f'{s.number} "{s.description}"' for s, _, _ in volumes)
        raise ItermaskError(f"{name} holds {len(volumes)} DICOM volumes ({listed}): give the files of one series")
    if not volumes:
        raise ItermaskError(f"{name} holds no DICOM volume IterMask can read (series {'; '.join(refused)})"
                            if refused else f"{name} holds no DICOM series")
    series, array, affine = volumes[0]
    path = folder / f"{series.name}.nii.gz"
    write_nifti(path, array, affine)
    return Scan(path, series)


def segmentation_dicom(segmentation, logic, series) -> bytes:
    """All segments of ``segmentation`` (the applied, perhaps edited result of ``logic``'s session) as a DICOM SEG of
    ``series``, the DICOM series its scan was read from, as ``segmentation.dcm`` bytes. SEMIAUTOMATIC: a person chose
    the threshold on the page, and may have painted."""
    if series is None:
        raise ItermaskError("the scan was not read from DICOM, so there is no DICOM series for a DICOM SEG")
    volume = logic.volume
    mask = nodes.mask_array(segmentation, volume)
    with tempfile.TemporaryDirectory(prefix="itermask-web-") as folder:
        path = Path(folder) / SEG_FILE
        write_dicom_seg(path, mask, nodes.ijk_to_ras(volume), series, model=logic.model_info["name"],
                        parameters={"policy": logic.parameters.node.GetParameter("policy")}, interactive=True)
        return path.read_bytes()
