"""Test DICOM series written from the shared NIfTI scans: any acquisition plane, patient position or obliquity, as a
scanner would store them (one MR Image Storage file per slice, in shuffled file order), so the reader is checked
against dcm2niix on geometries the one real series in ``../shared/data/dicom`` does not have.

A series is described by its voxel → LPS mm matrix (DICOM's patient space): columns 0 and 1 are the in-plane
directions (along a row, down a column) times the pixel spacing, column 2 the step to the next slice.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

# Direction cosines (row direction, column direction) in LPS of common acquisitions; the slice normal is their cross
# product. Supine head first is the scanner's default; the others are how the same planes look in patient space
# when the patient lies prone or on a side.
PLANES = {
    "axial_supine": ((1, 0, 0), (0, 1, 0)),
    "axial_prone": ((-1, 0, 0), (0, -1, 0)),
    "axial_decubitus_left": ((0, -1, 0), (1, 0, 0)),
    "axial_decubitus_right": ((0, 1, 0), (-1, 0, 0)),
    "sagittal": ((0, 1, 0), (0, 0, -1)),
    "coronal": ((1, 0, 0), (0, 0, -1)),
}
PATIENT_POSITION = {"axial_supine": "HFS", "axial_prone": "HFP", "axial_decubitus_left": "HFDL",
                    "axial_decubitus_right": "HFDR", "sagittal": "HFS", "coronal": "HFS", "oblique": "HFS"}


def rotation(degrees_about_lps: tuple[float, float, float]) -> np.ndarray:
    """3×3 rotation by the given angles about the L, P and S axes, applied in that order."""
    out = np.eye(3)
    for axis, degrees in enumerate(degrees_about_lps):
        a = np.deg2rad(degrees)
        r = np.eye(3)
        i, j = [k for k in range(3) if k != axis]
        r[i, i], r[i, j], r[j, i], r[j, j] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
        out = r @ out
    return out


def geometry(plane: str, spacing=(0.9, 1.0, 2.0), origin=(-60.0, -80.0, -40.0)) -> np.ndarray:
    """Voxel (column, row, slice) → LPS matrix for a plane of :data:`PLANES`, or ``"oblique"`` (axial tilted by
    17° and 9° about two axes)."""
    if plane == "oblique":
        row, col = (rotation((17.0, 0.0, 9.0)) @ np.eye(3)[:, :2]).T
    else:
        row, col = np.asarray(PLANES[plane], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = np.column_stack([row, col, np.cross(row, col)]) * np.asarray(spacing)
    affine[:3, 3] = origin
    return affine


def study(patient_id: str = "ITERMASK-TEST") -> dict:
    """The attributes that tie series together: patient, study, frame of reference."""
    return {"PatientName": "Test^Volunteer", "PatientID": patient_id, "PatientBirthDate": "19800101",
            "PatientSex": "O", "StudyInstanceUID": generate_uid(), "StudyDate": "20240101", "StudyTime": "120000",
            "StudyID": "1", "AccessionNumber": "A1", "ReferringPhysicianName": "",
            "FrameOfReferenceUID": generate_uid()}


def write_series(folder: Path, volume: np.ndarray, lps_affine: np.ndarray, *, series_number: int = 1,
                 description: str = "T1 test", patient_position: str = "HFS", shared: dict | None = None,
                 slope: float = 1.0, intercept: float = 0.0) -> list[Path]:
    """Write ``volume`` (columns, rows, slices; stored values, int16) as one file per slice into ``folder``.

    Files get random names (drawn from the series UID, so series never share one), and instance numbers run against
    the slice order, so a reader must place slices by their positions.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shared = shared or study()
    series_uid = generate_uid()
    row = lps_affine[:3, 0] / np.linalg.norm(lps_affine[:3, 0])
    col = lps_affine[:3, 1] / np.linalg.norm(lps_affine[:3, 1])
    pixel_spacing = [float(np.linalg.norm(lps_affine[:3, 1])), float(np.linalg.norm(lps_affine[:3, 0]))]
    thickness = float(np.linalg.norm(lps_affine[:3, 2]))
    rng = random.Random(series_uid)
    paths = []
    n = volume.shape[2]
    for k in range(n):
        ds = _slice_dataset(volume[:, :, k].T, shared)
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.InstanceNumber = n - k
        ds.PatientPosition = patient_position
        ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
        ds.ImagePositionPatient = [_ds(v) for v in (lps_affine @ [0, 0, k, 1])[:3]]
        ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
        ds.SliceThickness = _ds(thickness)
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "US"
        path = folder / f"{rng.getrandbits(48):012x}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced(folder: Path, out: Path, series_number: int = 50) -> Path:
    """The single-frame series in ``folder`` converted by highdicom into one enhanced multi-frame MR object,
    written as ``out/enhanced.dcm``."""
    from highdicom import UID
    from highdicom.legacy import LegacyConvertedEnhancedMRImage

    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir())]
    image = LegacyConvertedEnhancedMRImage(datasets, series_instance_uid=UID(), series_number=series_number,
                                           sop_instance_uid=UID(), instance_number=1)
    out.mkdir(parents=True)
    image.save_as(out / "enhanced.dcm")
    return out / "enhanced.dcm"


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters, as DICOM's DS allows."""
    return f"{value:.10g}"[:16]


def _slice_dataset(pixels: np.ndarray, shared: dict) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in shared.items():
        setattr(ds, key, value)
    ds.Modality, ds.Manufacturer, ds.SeriesDate, ds.SeriesTime = "MR", "IterMask test writer", "20240101", "120500"
    ds.PositionReferenceIndicator = ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "2D"
    ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = "2.5", "250", "1", "3"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds
