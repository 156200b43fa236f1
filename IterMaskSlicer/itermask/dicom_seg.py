"""DICOM SEG out: a mask on a DICOM series' grid as a BINARY DICOM Segmentation, written by highdicom.

The SEG shares the source's Patient, Study and Frame of Reference, references the source series and, frame by frame,
each source image it covers, and holds one segment "Lesion" coded in SNOMED CT as the Slicer module's segment is
(category 49755003 "Morphologically Altered Structure", type 52988006 "Lesion"), made by an algorithm identified as
IterMask with its version and the model that made it: AUTOMATIC from the CLI, SEMIAUTOMATIC from the page, where a
person chose the threshold and may have edited the mask. Frames without a lesion voxel are left out, as
the standard allows; a mask without any keeps every frame, so the SEG still says "nothing found" slice by slice.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from .dicom import DicomSeries, dicom_libraries
from .errors import ItermaskError
from .sitk_arrays import LPS_TO_RAS

SEG_FILE = "segmentation.dcm"
CATEGORY = ("49755003", "SCT", "Morphologically Altered Structure")
TYPE = ("52988006", "SCT", "Lesion")
SERIES_NUMBER_OFFSET = 1000  # the SEG's series number: its source's plus this, so they sort side by side


def write_dicom_seg(path: Path, mask: np.ndarray, affine: np.ndarray, series: DicomSeries, *, model: str,
                    parameters: dict[str, str], interactive: bool = False) -> str:
    """Write ``mask`` ((i, j, k) on the grid :func:`~itermask.dicom.read_series` gave ``series``, with ``affine``)
    to ``path`` as a DICOM SEG; returns its SeriesInstanceUID. ``parameters`` (policy, threshold, …) are recorded
    with the algorithm; ``interactive``: a person took part (SEMIAUTOMATIC)."""
    from . import __version__

    _, hd, _ = dicom_libraries()
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="IterMask", family=codes.cid7162.ArtificialIntelligence, version=__version__, source="IterMaskSlicer",
        parameters={"model": model, **parameters})
    kind = hd.seg.SegmentAlgorithmTypeValues
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Lesion", segmented_property_category=hd.sr.CodedConcept(*CATEGORY),
        segmented_property_type=hd.sr.CodedConcept(*TYPE),
        algorithm_type=kind.SEMIAUTOMATIC if interactive else kind.AUTOMATIC, algorithm_identification=algorithm)
    frames = frames_of_sources(mask, affine, series)
    # highdicom warns about the source's own odd values (a one-part patient name, say), which are copied as they
    # are and which the user cannot change here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            seg = hd.seg.Segmentation(
                source_images=list(series.datasets), pixel_array=frames,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[segment],
                series_instance_uid=hd.UID(), series_number=series.number + SERIES_NUMBER_OFFSET,
                sop_instance_uid=hd.UID(), instance_number=1, manufacturer="IterMaskSlicer",
                manufacturer_model_name=f"IterMask {model}"[:64], software_versions=__version__,
                device_serial_number="none", series_description=f"IterMask lesions ({series.description})"[:64],
                content_label="LESION", content_description=f"IterMask {model}"[:64],
                omit_empty_frames=bool(frames.any()))
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise ItermaskError(f"cannot write its DICOM SEG: {exc}") from None
    seg.save_as(path)
    return str(seg.SeriesInstanceUID)


def frames_of_sources(mask: np.ndarray, affine: np.ndarray, series: DicomSeries) -> np.ndarray:
    """The mask as one (rows, columns) frame per source frame, in the source's order: (frames, rows, columns)
    bool. Each frame is the mask slice at that frame's position, which must be a whole slice of the grid."""
    ras = _frame_positions(series) * np.diag(LPS_TO_RAS)[:3]
    voxels = (ras - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
    k = voxels[:, 2].round().astype(int)
    if np.abs(voxels[:, :2]).max() > 1e-3 or np.abs(voxels[:, 2] - k).max() > 1e-3 or not (
            (k >= 0) & (k < mask.shape[2])).all():
        raise ItermaskError("the mask's grid does not match the slices of the DICOM series")
    return np.ascontiguousarray(mask[:, :, k].transpose(2, 1, 0).astype(bool))


def _frame_positions(series: DicomSeries) -> np.ndarray:
    """(frames, 3) ImagePositionPatient (LPS mm) of each source frame, in the source's order."""
    first = series.datasets[0]
    if int(first.get("NumberOfFrames") or 1) > 1:
        groups = first.PerFrameFunctionalGroupsSequence
        return np.array([[float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient] for g in groups])
    return np.array([[float(v) for v in ds.ImagePositionPatient] for ds in series.datasets])
