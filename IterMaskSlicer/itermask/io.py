"""Reading and writing scans on disk (NIfTI through nibabel, NRRD through pynrrd, MetaImage ``.mha``/``.mhd``
through SimpleITK when it is installed, a DICOM series through :mod:`itermask.dicom`); used by the CLI and training.

Arrays come back in (i, j, k) index order with a 4×4 voxel → RAS mm affine, which is what the core expects.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ItermaskError
from .sitk_arrays import LPS_TO_RAS, sitk_array_affine

SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def scan_stem(path: str | os.PathLike) -> str:
    """File name without its image suffix: ``case01.nii.gz`` → ``case01``."""
    name = Path(path).name
    for suffix in SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def read_volume(path) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of an image file, of a folder holding one DICOM series, or of a
    :class:`~itermask.dicom.DicomSeries`; a one-line :class:`ItermaskError` if it cannot be read."""
    from . import dicom

    if isinstance(path, dicom.DicomSeries):
        return dicom.read_series(path)
    path = Path(path)
    if path.is_dir():
        return dicom.read_folder(path)
    if not path.is_file():
        raise ItermaskError(f"file not found: {path}")
    if is_dicom(path):
        return dicom.read_file(path)
    try:
        if path.name.lower().endswith((".nrrd", ".nhdr")):
            return _read_nrrd(path)
        if path.name.lower().endswith((".mha", ".mhd")):
            return _read_metaimage(path)
        import nibabel as nib

        image = nib.load(str(path))
        return np.asanyarray(image.dataobj), np.asarray(image.affine, dtype=np.float64)
    except ItermaskError:
        raise
    except Exception as exc:
        raise ItermaskError(f"cannot read {path} as an image ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM file: ``.dcm``, or the ``DICM`` marker after the 128-byte preamble (most DICOM
    files from scanners have no suffix at all)."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _read_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nrrd

    data, header = nrrd.read(str(path))
    if header.get("space directions") is None:
        raise ItermaskError(f"{path}: NRRD without a 'space directions' field, so where its voxels lie is unknown "
                            "(save it from Slicer or another tool that writes the geometry)")
    directions = np.asarray(header["space directions"], dtype=np.float64)
    directions = directions[~np.isnan(directions).any(axis=1)]  # drop a 'none' row of a non-spatial axis
    if directions.shape != (3, 3):
        raise ItermaskError(f"{path}: NRRD without a 3D 'space directions' field")
    affine = np.eye(4)
    affine[:3, :3] = directions.T
    affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    space = str(header.get("space", "left-posterior-superior")).lower()
    if space in ("left-posterior-superior", "lps"):
        affine = LPS_TO_RAS @ affine
    elif space not in ("right-anterior-superior", "ras"):
        raise ItermaskError(f"{path}: unsupported NRRD space {space!r}")
    return data, affine


def _read_metaimage(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A MetaImage through SimpleITK."""
    try:
        import SimpleITK as sitk
    except ImportError:
        raise ItermaskError(f"reading {path.name} needs SimpleITK (pip install SimpleITK), or convert it to NIfTI") \
            from None
    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ItermaskError(f"{path}: expected a 3D scalar volume, got {image.GetDimension()}D data with "
                            f"{image.GetNumberOfComponentsPerPixel()} components per voxel")
    return sitk_array_affine(image)


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray) -> None:
    """Write ``array`` with exactly ``affine`` (qform and sform both set, so every reader agrees)."""
    import nibabel as nib

    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
