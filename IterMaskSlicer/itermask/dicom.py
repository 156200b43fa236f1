"""DICOM series in: the image series of a folder, the checks that refuse what is not one 3D image, and reading one.

pydicom reads the headers (grouping files into series, telling images from other objects), highdicom places the
slices (its volume test: one orientation and pixel spacing, slices evenly spaced along their normal), and SimpleITK
(GDCM, the reader dcm2niix is checked against in the tests) reads the pixels of the slices in that order. An
enhanced multi-frame object is read whole by highdicom. Like every reader in :mod:`itermask.io`, a series comes back
as an (i, j, k) = (column, row, slice) array with a voxel → RAS mm affine, rescale slope and intercept applied.
Losslessly compressed pixels (JPEG lossless, JPEG-LS, JPEG 2000, RLE, deflated) read as the uncompressed ones:
GDCM decodes them, inside SimpleITK for single frames and as pydicom's plugin (python-gdcm) for an enhanced object.

These libraries are the optional ``dicom`` extra (``pip install "itermask-slicer[dicom]"``); the core imports none
of them until a DICOM series is read.
"""
from __future__ import annotations

import gc
import os
import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ItermaskError
from .sitk_arrays import LPS_TO_RAS, sitk_array_affine

INSTALL = 'reading DICOM needs pydicom, highdicom and SimpleITK: pip install "itermask-slicer[dicom]"'
# Modalities of objects that sit in image series folders but hold no image to segment (segmentations, structured
# reports, structure sets, presentation states, key-object notes, registrations, plans, encapsulated documents).
NOT_IMAGES = {"SEG", "SR", "RTSTRUCT", "PR", "KO", "REG", "RTPLAN", "RTRECORD", "DOC"}
_POSITION_TOL_MM = 0.01  # two slices closer than this along the normal are at the same position


def dicom_libraries():
    """(pydicom, highdicom, SimpleITK), or a one-line :class:`ItermaskError` saying how to install them."""
    try:
        import highdicom
        import pydicom
        import SimpleITK
    except ImportError:
        raise ItermaskError(INSTALL) from None
    return pydicom, highdicom, SimpleITK


@dataclass(frozen=True, order=True)
class DicomSeries:
    """One series found in ``folder`` (its files may lie in subfolders): the headers of its files, pixel data not
    read. ``name`` is its output folder name, from its series number and description."""
    folder: Path
    number: int
    uid: str
    description: str = field(compare=False)
    name: str = field(compare=False)
    datasets: tuple = field(compare=False, repr=False)

    @property
    def path(self) -> Path:
        """``folder/name``: where the series would be if it were a file, for naming outputs like files'."""
        return self.folder / self.name

    def __str__(self) -> str:
        return f'{self.folder}: series {self.number} "{self.description}"'


def find_series(folder: Path) -> list[DicomSeries]:
    """Every series with a DICOM file in ``folder`` or below (hidden folders and files without a series, like a
    DICOMDIR, left out), in series-number order."""
    pydicom = dicom_libraries()[0]
    with _cyclic_gc_paused():
        headers = [_header(pydicom, path) for path in _files_under(folder)]
    groups = defaultdict(list)
    for ds in headers:
        if ds is not None and "SeriesInstanceUID" in ds:
            groups[str(ds.SeriesInstanceUID)].append(ds)
    return _distinct(sorted(_series(folder, datasets) for datasets in groups.values()))


def _header(pydicom, path: Path):
    """The header of a DICOM file (pixel data not read), or None for a file that is not DICOM: one without the DICM
    marker, unless it is named ``.dcm`` (as :func:`itermask.io.is_dicom` decides)."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=path.suffix.lower() == ".dcm")
    except pydicom.errors.InvalidDicomError:
        return None
    except Exception as exc:  # pydicom raises many types for a damaged file; name the file
        raise ItermaskError(f"cannot read {path} as DICOM ({type(exc).__name__}: {exc})") from None


@contextmanager
def _cyclic_gc_paused():
    """pydicom makes about a hundred objects per file, none in reference cycles; left on, the cyclic collector
    scans the whole heap again and again while a series is read (a fifth of the reading time in the benchmark)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _files_under(folder: Path) -> list[Path]:
    """The files in ``folder`` and its subfolders, hidden ones and those in hidden folders left out, in name
    order (os.walk: a 384-file series is walked in a millisecond, where pathlib takes tens)."""
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")]
        found.extend(os.path.join(root, f) for f in files if not f.startswith("."))
    return [Path(f) for f in sorted(found)]


def _series(folder: Path, datasets: list) -> DicomSeries:
    first = datasets[0]
    number = int(first.get("SeriesNumber") or 0)
    description = str(first.get("SeriesDescription") or first.get("ProtocolName") or first.get("Modality", ""))
    return DicomSeries(folder, number, str(first.SeriesInstanceUID), description, _folder_name(number, description),
                       tuple(datasets))


def _folder_name(number: int, description: str) -> str:
    """``5_t1_mprage_sag`` for series 5 "t1 mprage sag": letters, digits, ``-`` and ``_`` only."""
    return re.sub(r"[^A-Za-z0-9-]+", "_", f"{number}_{description}").strip("_") or str(number)


def _distinct(series: list[DicomSeries]) -> list[DicomSeries]:
    """Series that share a number and description get the start of their UID's last part appended."""
    names = [s.name for s in series]
    return [s if names.count(s.name) == 1 else replace(s, name=f"{s.name}_{s.uid.split('.')[-1][:8]}")
            for s in series]


def read_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of the one image series in ``folder``; a one-line error if it holds none or several."""
    series = find_series(folder)
    if len(series) != 1:
        listed = "; ".join(f'{s.number} "{s.description}"' for s in series)
        raise ItermaskError(f"{folder} holds {len(series)} DICOM series ({listed}): give the folder of one, or "
                            f"segment the folder to do each (itermask segment {folder})" if series else
                            f"{folder} holds no DICOM series")
    return _read_named(series[0])


def read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of one DICOM file that is a whole volume (an enhanced multi-frame object)."""
    pydicom = dicom_libraries()[0]
    try:
        series = _series(path.parent, [pydicom.dcmread(path, stop_before_pixels=True)])
    except Exception as exc:
        raise ItermaskError(f"cannot read {path} as a DICOM image ({type(exc).__name__}: {exc})") from None
    if _frames(series.datasets[0]) == 1 and "Rows" in series.datasets[0]:
        raise ItermaskError(f"{path} is one slice of DICOM series {series.number} \"{series.description}\": give "
                            f"the folder that holds the series ({path.parent})")
    return _read_named(series)


def _read_named(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """:func:`read_series`, its errors naming the series (the caller only named a folder or file)."""
    try:
        return read_series(series)
    except ItermaskError as exc:
        raise ItermaskError(f"DICOM {series}: {exc}") from None


def read_series(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of a series that is one 3D image; :class:`ItermaskError` saying what it is instead (the
    caller names the series): not an image, a localizer, 4D, mixed orientation or spacing, missing or uneven
    slices, or an enhanced multi-frame object whose frames do not make one volume. Everything but the last is
    refused before any pixel is read."""
    _check_object(series)
    if _frames(series.datasets[0]) > 1:
        return _read_multiframe(series)
    ordered = slices_in_order(series)  # first: a 4D mosaic series is better described as 4D
    if "MOSAIC" in _image_type(series.datasets[0]):
        raise ItermaskError("it is a Siemens mosaic (each image tiles the slices of a volume, as diffusion and fMRI "
                            "series are stored): convert it with dcm2niix")
    _, _, sitk = dicom_libraries()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(ds.filename) for ds in ordered])
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ItermaskError(f"SimpleITK cannot read its pixels, stored as {_syntax(ordered[0])} "
                            f"({str(exc).strip().splitlines()[-1][:160]})") from None
    return sitk_array_affine(image)


def _check_object(series: DicomSeries) -> None:
    first = series.datasets[0]
    if first.get("Modality") in NOT_IMAGES or "Rows" not in first:
        raise ItermaskError(f"it is not an image but {_sop_class_name(first)}")
    if "LOCALIZER" in _image_type(first):
        raise ItermaskError("it is a localizer (scout), not a volume")
    frames = [_frames(ds) for ds in series.datasets]
    if max(frames) > 1 and len(frames) > 1:
        raise ItermaskError(f"it holds {len(frames)} multi-frame objects; IterMask reads one volume (a 4D "
                            "series, or a volume split across files: convert it with dcm2niix)")


def slices_in_order(series: DicomSeries) -> list:
    """The single-frame datasets of a series in volume order, placed by highdicom; a one-line error saying why
    they are not one volume: a single slice, mixed orientations or pixel spacings, 4D, a sheared stack, missing
    or unevenly spaced slices."""
    from highdicom.spatial import get_volume_positions

    datasets = series.datasets
    if len(datasets) < 2:
        raise ItermaskError("it is a single slice, not a volume")
    if "ImageOrientationPatient" not in datasets[0] or "ImagePositionPatient" not in datasets[0]:
        raise ItermaskError("its slices have no position or orientation in the patient")
    orientations = np.array([ds.ImageOrientationPatient for ds in datasets], dtype=float)
    if np.abs(orientations - orientations[0]).max() > 1e-4:
        raise ItermaskError(f"its slices have {len(np.unique(orientations.round(4), axis=0))} different "
                            "orientations")
    spacings = np.array([ds.get("PixelSpacing") or (0.0, 0.0) for ds in datasets], dtype=float)
    if np.abs(spacings - spacings[0]).max() > 1e-4:
        raise ItermaskError(f"its slices have {len(np.unique(spacings.round(4), axis=0))} different pixel spacings")
    sizes = {(ds.Rows, ds.Columns) for ds in datasets}
    if len(sizes) > 1:
        raise ItermaskError(f"its slices have {len(sizes)} different sizes (rows × columns)")
    positions = np.array([ds.ImagePositionPatient for ds in datasets], dtype=float)
    spacing, order = get_volume_positions(positions, orientations[0])
    if spacing is None:
        raise ItermaskError(_why_not_a_volume(positions, orientations[0]))
    return [datasets[i] for i in np.argsort(order)]


def _why_not_a_volume(positions: np.ndarray, orientation: np.ndarray) -> str:
    """What is wrong with slice positions that highdicom could not place in one volume."""
    row, col = orientation[:3], orientation[3:]
    along = np.sort(positions @ np.cross(row, col))
    distinct = along[np.r_[True, np.diff(along) > _POSITION_TOL_MM]]
    if len(distinct) < len(along):
        return (f"it is 4D: {len(along)} images at {len(distinct)} position{'s' * (len(distinct) > 1)} (diffusion, "
                "fMRI or a time series); IterMask reads one 3D volume (export the one you want as its own series)")
    in_plane = (positions - positions[0]) @ np.column_stack([row, col])
    if np.abs(in_plane).max() > 1e-3 * np.ptp(along):
        return "its slices are not stacked along their normal (a tilted gantry or a sheared stack)"
    gaps = np.diff(distinct)
    steps = gaps / gaps.min()
    if np.allclose(steps, steps.round(), atol=0.02):
        missing = int(steps.round().sum() - len(steps))
        return (f"it has {missing} missing slice{'s' * (missing > 1)} (slices {gaps.min():.3g} mm apart, with gaps "
                f"of up to {gaps.max():.3g} mm)")
    return f"its slices are unevenly spaced ({gaps.min():.3g} to {gaps.max():.3g} mm apart)"


def _read_multiframe(series: DicomSeries) -> tuple[np.ndarray, np.ndarray]:
    """An enhanced multi-frame object, placed by highdicom from its per-frame positions."""
    pydicom, hd, _ = dicom_libraries()
    dataset = pydicom.dcmread(series.datasets[0].filename)
    _check_decoder(dataset)
    try:
        volume = hd.Image.from_dataset(dataset, copy=False).get_volume(dtype=np.float32)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ItermaskError(f"it is an enhanced multi-frame object whose frames cannot be placed in one volume "
                            f"({reason})") from None
    if volume.array.ndim != 3:
        raise ItermaskError(f"it is an enhanced multi-frame object of shape {volume.array.shape}, not one scalar "
                            "volume")
    # highdicom's axes are (slice, row, column) in LPS; the core's are (column, row, slice) in RAS.
    return volume.array.transpose(2, 1, 0), LPS_TO_RAS @ volume.affine[:, [2, 1, 0, 3]]


def _check_decoder(dataset) -> None:
    """pydicom decodes an enhanced object's frames (for highdicom): refuse, naming the transfer syntax, pixels that
    none of its installed decoders reads (JPEG lossless needs GDCM, which the ``dicom`` extra installs)."""
    from pydicom.pixels import get_decoder

    try:
        available = get_decoder(dataset.file_meta.TransferSyntaxUID).is_available
    except (NotImplementedError, AttributeError):  # a transfer syntax pydicom does not know, or none given
        available = False
    if not available:
        raise ItermaskError(f"its pixels are stored as {_syntax(dataset)}, which no installed pixel decoder reads "
                            "(pip install python-gdcm)")


def _syntax(dataset) -> str:
    """The name of a dataset's transfer syntax (how its pixels are encoded)."""
    uid = dataset.get("file_meta", {}).get("TransferSyntaxUID")
    return uid.name if uid is not None else "an unknown transfer syntax"


def _image_type(dataset) -> list[str]:
    return [str(v).upper() for v in dataset.get("ImageType", [])]


def _frames(dataset) -> int:
    return int(dataset.get("NumberOfFrames") or 1)


def _sop_class_name(dataset) -> str:
    uid = dataset.get("SOPClassUID")
    name = getattr(uid, "name", "") if uid is not None else ""
    return f"a {name}" if name and name != str(uid) else f"a {dataset.get('Modality', 'non-image')} object"


