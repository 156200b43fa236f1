"""A DICOM SEG out: ``itermask segment`` on a folder of DICOM series writes, for each image series, a BINARY SEG that
dciodvfy accepts, that references its source and holds exactly the voxels of ``mask.nii.gz``; the other series'
errors do not stop it."""
import csv
import json
import shutil
import subprocess

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest

from itermask import __version__
from itermask.cli import main
from itermask.dicom import find_series, read_series
from itermask.dicom_seg import write_dicom_seg

from conftest import DATA
from dicom_writer import geometry, study, write_enhanced, write_series
from test_dicom_io import SIEMENS

CSTAR = DATA / "stroke_chronic" / "cstar" / "FLAIR.nii.gz"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A study folder: the C-STAR FLAIR as axial series 5 (140 slices) and a copy of the real 4D diffusion series."""
    root = tmp_path_factory.mktemp("study")
    flair = np.asarray(nib.load(CSTAR).dataobj).astype(np.int16)
    write_series(root / "flair", flair, geometry("axial_supine", spacing=(1.0, 1.0, 1.0)), series_number=5,
                 description="FLAIR axial", shared=study())
    shutil.copytree(SIEMENS / "DWI", root / "dwi")
    return root


@pytest.fixture(scope="module")
def segmented(cohort, tiny_model, tmp_path_factory):
    """``itermask segment STUDY``: (output folder, exit status)."""
    out = tmp_path_factory.mktemp("out")
    code = main(["segment", str(cohort), "--model", str(tiny_model), "-o", str(out), "--device", "cpu"])
    return out, code


def test_each_series_is_a_scan_and_a_bad_one_does_not_stop_the_others(segmented, capsys):
    out, code = segmented
    assert code == 1  # the diffusion series failed
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["5_FLAIR_axial", "summary.csv"]
    with open(out / "summary.csv") as handle:
        rows = {row["input"].split(": ")[-1]: row for row in csv.DictReader(handle)}
    assert rows['series 4 "ep2d_diff_mddw_20_p2"']["status"] == "failed"
    assert rows['series 4 "ep2d_diff_mddw_20_p2"']["error"].startswith("it is 4D: 13 images at 1 position")
    assert rows['series 5 "FLAIR axial"']["status"] == "ok"


def test_the_seg_references_its_source_and_holds_exactly_the_mask(segmented, cohort):
    out, _ = segmented
    folder = out / "5_FLAIR_axial"
    report = json.loads((folder / "report.json").read_text())
    source = next(s for s in find_series(cohort) if s.number == 5)
    assert report["source_series_instance_uid"] == source.uid and report["dicom_seg"] == "segmentation.dcm"
    mask = np.asanyarray(nib.load(folder / "mask.nii.gz").dataobj).astype(bool)
    assert mask.any(), "a mask with lesion voxels, so that frames are checked (empty ones are left out)"
    seg = hd.seg.segread(folder / "segmentation.dcm")
    assert seg.SeriesInstanceUID == report["dicom_seg_series_instance_uid"]
    assert_is_a_seg_of(seg, source, mask, nib.load(folder / "mask.nii.gz").affine, model="tiny-flair")


def assert_is_a_seg_of(seg, source, mask: np.ndarray, affine: np.ndarray, model: str, algorithm_type="AUTOMATIC"):
    """One "Lesion" segment coded as the Slicer module codes it, by IterMask, on the source's patient, study and
    frame of reference, referencing the source series, each frame the source image at its place, and the frames
    together exactly ``mask``."""
    first = source.datasets[0]
    for attribute in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
        assert seg[attribute].value == first[attribute].value
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [source.uid]
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "Lesion" and segment.SegmentAlgorithmType == algorithm_type
    category, kind = segment.SegmentedPropertyCategoryCodeSequence[0], segment.SegmentedPropertyTypeCodeSequence[0]
    assert (category.CodeValue, category.CodingSchemeDesignator) == ("49755003", "SCT")
    assert (kind.CodeValue, kind.CodingSchemeDesignator, kind.CodeMeaning) == ("52988006", "SCT", "Lesion")
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("IterMask", __version__)
    assert f"model={model}" in algorithm.AlgorithmParameters
    assert np.array_equal(seg_as_volume(seg, mask.shape, affine), mask)
    # every frame names the source image (and frame) it was drawn on, at the same place
    sources = {ds.SOPInstanceUID: ds for ds in source.datasets}
    multiframe = int(first.get("NumberOfFrames") or 1) > 1
    for frame in seg.PerFrameFunctionalGroupsSequence:
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        image = sources[reference.ReferencedSOPInstanceUID]
        if multiframe:
            image = image.PerFrameFunctionalGroupsSequence[reference.ReferencedFrameNumber - 1].PlanePositionSequence[0]
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient, image.ImagePositionPatient,
                           atol=1e-3)
    if shutil.which("dciodvfy"):
        checked = subprocess.run(["dciodvfy", seg.filename], capture_output=True, text=True)
        errors = [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
        assert errors == []


def seg_as_volume(seg, shape, affine) -> np.ndarray:
    """The SEG's frames placed on the (i, j, k) grid of ``affine`` by their own positions; frames left out are
    empty."""
    volume = np.zeros(shape, bool)
    frames = seg.pixel_array.reshape(-1, *seg.pixel_array.shape[-2:])  # a single frame comes as (rows, columns)
    for frame, pixels in zip(seg.PerFrameFunctionalGroupsSequence, frames):
        ras = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float) * [-1, -1, 1]
        i, j, k = np.linalg.solve(affine[:3, :3], ras - affine[:3, 3])
        assert abs(i) < 1e-3 and abs(j) < 1e-3 and abs(k - round(k)) < 1e-3
        volume[:, :, round(k)] = pixels.T
    return volume


@pytest.mark.parametrize("plane", ["oblique", "axial_decubitus_left"])
def test_a_seg_of_single_frames_in_any_plane(plane, tmp_path):
    block = np.asarray(nib.load(CSTAR).dataobj)[30:94, 40:112, 50:74].astype(np.int16)
    write_series(tmp_path / "s", block, geometry(plane), series_number=2, description=plane)
    (source,) = find_series(tmp_path / "s")
    image, affine = read_series(source)
    mask = image > np.percentile(image, 97)
    mask[:, :, :5] = False  # some frames without lesion, left out of the SEG
    write_dicom_seg(tmp_path / "seg.dcm", mask, affine, source, model="flair-2d", parameters={"policy": "itermask2"})
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.NumberOfFrames == mask.any(axis=(0, 1)).sum()
    assert_is_a_seg_of(seg, source, mask, affine, model="flair-2d")


def test_a_seg_of_an_enhanced_multiframe_source_and_of_an_empty_mask(tmp_path):
    block = np.asarray(nib.load(CSTAR).dataobj)[30:94, 40:112, 50:74].astype(np.int16)
    write_series(tmp_path / "s", block, geometry("coronal"), series_number=2, description="coronal")
    (source,) = find_series(write_enhanced(tmp_path / "s", tmp_path / "enhanced").parent)
    image, affine = read_series(source)
    for mask in (image > np.percentile(image, 90), np.zeros(image.shape, bool)):
        write_dicom_seg(tmp_path / "seg.dcm", mask, affine, source, model="t1-3d", parameters={})
        seg = hd.seg.segread(tmp_path / "seg.dcm")
        assert_is_a_seg_of(seg, source, mask, affine, model="t1-3d")
    assert seg.NumberOfFrames == image.shape[2]  # an empty mask keeps every frame: "nothing found", slice by slice


def test_no_dicom_seg_writes_none_but_still_records_the_source(cohort, tiny_model, tmp_path):
    flair = next(s for s in find_series(cohort) if s.number == 5)
    assert main(["segment", str(cohort / "flair"), "--model", str(tiny_model), "-o", str(tmp_path),
                 "--device", "cpu", "--no-dicom-seg"]) == 0
    report = json.loads((tmp_path / "5_FLAIR_axial" / "report.json").read_text())
    assert report["source_series_instance_uid"] == flair.uid and report["dicom_seg"] is None
    assert not (tmp_path / "5_FLAIR_axial" / "segmentation.dcm").exists()
