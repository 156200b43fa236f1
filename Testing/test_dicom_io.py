"""A DICOM series in: ``read_volume(FOLDER)`` against dcm2niix on the real Siemens series and on series written from a
shared scan in every plane and patient position, and the one-line refusals of what is not one 3D volume."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from itermask.dicom import find_series
from itermask.errors import ItermaskError
from itermask.io import read_volume
from itermask.sitk_arrays import LPS_TO_RAS

from conftest import DATA
from dicom_writer import PATIENT_POSITION, geometry, study, write_enhanced, write_series

SIEMENS = DATA / "dicom" / "siemens_supine_hfs"
CSTAR = DATA / "stroke_chronic" / "cstar" / "FLAIR.nii.gz"
CASES = ("axial_supine", "axial_prone", "axial_decubitus_left", "axial_decubitus_right", "sagittal", "coronal",
         "oblique")


def dcm2niix(folder: Path, out: Path) -> dict[str, nib.Nifti1Image]:
    """dcm2niix's NIfTI of every series under ``folder``, by series number."""
    exe = shutil.which("dcm2niix", path=str(Path(sys.executable).parent)) or shutil.which("dcm2niix")
    out.mkdir(exist_ok=True)
    subprocess.run([exe, "-z", "n", "-f", "%s", "-o", str(out), str(folder)], check=True, capture_output=True)
    return {p.name[:-4]: nib.load(p) for p in out.glob("*.nii")}


def assert_same_voxels_at_same_places(array, affine, reference: nib.Nifti1Image):
    """Equal voxel for voxel once both are turned to the closest RAS axes, and at the same world positions (the
    reader's slice order is highdicom's, not necessarily the files' or dcm2niix's)."""
    ours = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(array, np.float64), affine))
    theirs = nib.as_closest_canonical(reference)
    assert ours.shape == theirs.shape
    assert np.array_equal(ours.get_fdata(), theirs.get_fdata())
    assert np.abs(ours.affine - theirs.affine).max() < 1e-3


@pytest.fixture(scope="module")
def scan_block():
    """A 64×72×24 block of the C-STAR stroke FLAIR (8-bit), as stored values."""
    return np.asarray(nib.load(CSTAR).dataobj)[30:94, 40:112, 50:74].astype(np.int16)


@pytest.fixture(scope="module")
def written(scan_block, tmp_path_factory):
    """Each case of :data:`CASES` (and one with a rescale slope) as its own series, with dcm2niix's reading of it:
    {case: (folder, lps affine, real values, dcm2niix image)}."""
    root = tmp_path_factory.mktemp("series")
    cases = {case: (case, 1.0, 0.0) for case in CASES} | {"rescaled": ("axial_supine", 2.5, -10.0)}
    out = {}
    for number, (name, (plane, slope, intercept)) in enumerate(cases.items(), start=1):
        lps = geometry(plane)
        write_series(root / name, scan_block, lps, series_number=number, description=name,
                     patient_position=PATIENT_POSITION[plane], slope=slope, intercept=intercept)
        out[name] = (root / name, lps, scan_block * slope + intercept, str(number))
    converted = dcm2niix(root, tmp_path_factory.mktemp("dcm2niix"))
    return {name: (folder, lps, values, converted[number]) for name, (folder, lps, values, number) in out.items()}


def test_real_siemens_series_equals_dcm2niix(tmp_path):
    array, affine = read_volume(SIEMENS / "T1_sagittal")
    assert array.shape == (256, 256, 35)
    assert_same_voxels_at_same_places(array, affine, dcm2niix(SIEMENS / "T1_sagittal", tmp_path / "out")["3"])


@pytest.mark.parametrize("case", [*CASES, "rescaled"])
def test_every_plane_and_patient_position_equals_dcm2niix_and_the_written_volume(written, case):
    folder, lps, values, converted = written[case]
    array, affine = read_volume(folder)
    assert_same_voxels_at_same_places(array, affine, converted)
    assert_same_voxels_at_same_places(array, affine, truth(values, lps))  # and exactly what was written


def truth(values: np.ndarray, lps: np.ndarray) -> nib.Nifti1Image:
    """The volume a series was written from, at its place."""
    return nib.Nifti1Image(values.astype(np.float64), LPS_TO_RAS @ lps)


def test_several_series_in_one_folder_are_found_and_named_by_number_and_description(scan_block, tmp_path):
    shared = study()
    write_series(tmp_path / "a", scan_block, geometry("axial_supine"), series_number=7, description="FLAIR axial",
                 shared=shared)
    write_series(tmp_path / "a", scan_block, geometry("sagittal"), series_number=3, description="t1/mprage 1.0mm",
                 shared=shared)
    series = find_series(tmp_path)
    assert [(s.number, s.name) for s in series] == [(3, "3_t1_mprage_1_0mm"), (7, "7_FLAIR_axial")]
    assert all(len(s.datasets) == 24 for s in series)
    with pytest.raises(ItermaskError, match=r"holds 2 DICOM series \(3 \"t1/mprage 1.0mm\"; 7 \"FLAIR axial\"\)"):
        read_volume(tmp_path)


def test_an_enhanced_multiframe_object_is_read_by_highdicom(written, tmp_path):
    enhanced = write_enhanced(written["oblique"][0], tmp_path / "enhanced")
    array, affine = read_volume(enhanced)
    _, lps, values, _ = written["oblique"]
    assert_same_voxels_at_same_places(array, affine, truth(values, lps))
    assert np.array_equal(read_volume(enhanced.parent)[0], array)  # its folder too


def _refusals():
    """(name, how a good 24-slice axial series is spoiled, the reason expected)."""
    def every(files, **values):
        for path in files:
            ds = pydicom.dcmread(path)
            for key, value in values.items():
                setattr(ds, key, value)
            ds.save_as(path)

    def one(files, **values):
        every(files[5:6], **values)

    def shift(files, mm):
        ds = pydicom.dcmread(files[10])
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1],
                                   float(ds.ImagePositionPatient[2]) + mm]
        ds.save_as(files[10])

    return [
        ("localizer", lambda f: every(f, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]), "is a localizer"),
        ("orientation", lambda f: one(f, ImageOrientationPatient=[1, 0, 0, 0, 0.9961947, -0.0871557]),
         "2 different orientations"),
        ("spacing", lambda f: one(f, PixelSpacing=[1.2, 0.9]), "2 different pixel spacings"),
        ("missing", lambda f: f[10].unlink(), "it has 1 missing slice (slices 2 mm apart, with gaps of up to 4 mm)"),
        ("uneven", lambda f: shift(f, 0.7), "unevenly spaced"),
        ("4D", lambda f: shift(f, 2.0), "it is 4D: 24 images at 23 positions"),
        ("sheared", lambda f: [shift_in_plane(p, i) for i, p in enumerate(sorted_by_position(f))],
         "not stacked along their normal"),
        ("one slice", lambda f: [p.unlink() for p in f[1:]], "a single slice"),
    ]


def sorted_by_position(files):
    return sorted(files, key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))


def shift_in_plane(path, i):
    """Move slice ``i`` 0.5 mm per slice to the left: a stack tilted like a CT gantry."""
    ds = pydicom.dcmread(path)
    ds.ImagePositionPatient = [float(ds.ImagePositionPatient[0]) + 0.5 * i, *ds.ImagePositionPatient[1:]]
    ds.save_as(path)


@pytest.mark.parametrize("name, spoil, reason", _refusals(), ids=[r[0] for r in _refusals()])
def test_what_is_not_one_volume_is_refused_naming_the_series(scan_block, tmp_path, name, spoil, reason):
    files = write_series(tmp_path / "s", scan_block, geometry("axial_supine"), series_number=9,
                         description=f"spoiled {name}")
    spoil(sorted_by_position(files))
    with pytest.raises(ItermaskError) as error:
        read_volume(tmp_path / "s")
    assert f'series 9 "spoiled {name}": ' in str(error.value) and reason in str(error.value)
    assert "\n" not in str(error.value)


def test_the_real_diffusion_series_is_refused_as_4d():
    with pytest.raises(ItermaskError, match=r'series 4 "ep2d_diff_mddw_20_p2": it is 4D: 13 images at 1 position '):
        read_volume(SIEMENS / "DWI")


def test_non_images_and_unplaceable_enhanced_objects_are_refused(written, tmp_path):
    for modality, sop_class, expected in (("SR", "1.2.840.10008.5.1.4.1.1.88.33", "Comprehensive SR Storage"),
                                          ("PR", "1.2.840.10008.5.1.4.1.1.11.1",
                                           "Grayscale Softcopy Presentation State Storage"),
                                          ("RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage")):
        path = tmp_path / modality / "object.dcm"
        _minimal_object(path, modality, sop_class)
        with pytest.raises(ItermaskError, match=f"it is not an image but a {expected}"):
            read_volume(path.parent)
    enhanced = write_enhanced(written["axial_supine"][0], tmp_path / "unplaceable")
    ds = pydicom.dcmread(enhanced)
    for group in ds.PerFrameFunctionalGroupsSequence:
        del group.PlanePositionSequence
    ds.save_as(enhanced)
    with pytest.raises(ItermaskError, match="enhanced multi-frame object whose frames cannot be placed"):
        read_volume(enhanced.parent)


def _minimal_object(path: Path, modality: str, sop_class: str) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.Modality = generate_uid(), 99, modality
    path.parent.mkdir(parents=True)
    ds.save_as(path, enforce_file_format=True)


def test_without_the_dicom_extra_one_line_says_how_to_install_it(tmp_path):
    script = ("import sys; sys.modules['highdicom'] = None\n"  # as if the extra were not installed
              "from itermask.cli import main\n"
              f"sys.exit(main(['segment', {str(SIEMENS)!r}, '-o', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ('itermask: error: reading DICOM needs pydicom, highdicom and SimpleITK: '
                                   'pip install "itermask-slicer[dicom]"')
    assert not (tmp_path / "out").exists()


# Lossless transfer syntaxes and the Debian reference tool that writes each (input and output file appended).
LOSSLESS = {
    "1.2.840.10008.1.2.4.70": ["dcmcjpeg", "--encode-lossless-sv1"],  # JPEG lossless, first-order prediction (dcmtk)
    "1.2.840.10008.1.2.4.80": ["dcmcjpls", "--encode-lossless"],  # JPEG-LS lossless (dcmtk)
    "1.2.840.10008.1.2.4.90": ["gdcmconv", "--j2k"],  # JPEG 2000 lossless only (libgdcm-tools)
    "1.2.840.10008.1.2.5": ["dcmcrle"],  # RLE lossless (dcmtk)
    "1.2.840.10008.1.2.1.99": ["gdcmconv", "--deflated"],  # deflated explicit VR little endian (libgdcm-tools)
}


def compressed(files: list[Path], out: Path, syntax: str) -> Path:
    """``files`` re-encoded in transfer syntax ``syntax`` by its reference tool, into the new folder ``out``."""
    tool = LOSSLESS[syntax]
    if shutil.which(tool[0]) is None:
        pytest.skip(f"{tool[0]} is not installed (apt-get install dcmtk libgdcm-tools)")
    out.mkdir()
    for path in files:
        subprocess.run([*tool, str(path), str(out / path.name)], check=True, capture_output=True)
        assert pydicom.dcmread(out / path.name, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    return out


@pytest.mark.parametrize("syntax", LOSSLESS, ids=[pydicom.uid.UID(s).keyword for s in LOSSLESS])
def test_a_losslessly_compressed_series_reads_as_the_uncompressed_one(written, syntax, tmp_path):
    """The real Siemens series (single frames: SimpleITK/GDCM) and an enhanced multi-frame object (pydicom's
    decoders, for highdicom), each compressed, read voxel for voxel as before, at the same place."""
    enhanced = write_enhanced(written["oblique"][0], tmp_path / "enhanced")
    for source in (SIEMENS / "T1_sagittal", enhanced.parent):
        array, affine = read_volume(source)
        squeezed = compressed(sorted(source.iterdir()), tmp_path / f"{source.name}_{syntax}", syntax)
        array_c, affine_c = read_volume(squeezed)
        assert np.array_equal(array_c, array) and np.array_equal(affine_c, affine)


def test_pixels_no_decoder_reads_are_refused_naming_the_transfer_syntax(written, tmp_path):
    if shutil.which("dcmcjpeg") is None:
        pytest.skip("dcmcjpeg is not installed (apt-get install dcmtk)")
    jpeg = "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])"
    # an enhanced object in JPEG lossless, read without python-gdcm (pydicom's one decoder for it here)
    enhanced = write_enhanced(written["axial_supine"][0], tmp_path / "enhanced")
    squeezed = compressed([enhanced], tmp_path / "jpeg", "1.2.840.10008.1.2.4.70")
    script = ("import sys; sys.modules['gdcm'] = None\n"  # as if python-gdcm were not installed
              "from itermask.cli import main\n"
              f"sys.exit(main(['segment', {str(squeezed / enhanced.name)!r}, '-o', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 1 and not (tmp_path / "out").exists()  # 1: an input failed
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.strip().endswith(f"its pixels are stored as {jpeg}, which no installed pixel decoder reads "
                                        "(pip install python-gdcm)")
    # single frames whose header says JPEG lossless over data that is not a JPEG stream
    from pydicom.encaps import encapsulate

    files = write_series(tmp_path / "damaged", written["axial_supine"][2].astype(np.int16), geometry("axial_supine"),
                         series_number=8, description="damaged")
    for path in files:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.70"
        ds.PixelData = encapsulate([b"\xff\xd8 not a JPEG stream \xff\xd9"])
        ds.save_as(path)
    with pytest.raises(ItermaskError, match=rf'series 8 "damaged": SimpleITK cannot read its pixels, stored as '
                                            rf'{re.escape(jpeg)} \('):
        read_volume(tmp_path / "damaged")
