"""A DICOM series on the page, zipped or as a folder on the command line: unpacked only inside the uploads folder and
within the upload limit, read as the CLI reads a series, and its applied (and painted) result offered as a DICOM SEG of
that series, in a real browser."""
from __future__ import annotations

import io
import stat
import struct
import zipfile
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest

from itermask.dicom import find_series
from itermask.errors import ItermaskError
from itermask.io import read_volume

from conftest import DATA
from dicom_writer import geometry, study, write_series
from test_dicom_io import SIEMENS

pytest.importorskip("trame_slicer")
from itermask_web.files import Uploads  # noqa: E402

CSTAR = DATA / "stroke_chronic" / "cstar" / "FLAIR.nii.gz"


def zipped(members: dict[str, bytes], links: dict[str, str] = {}) -> bytes:
    """A zip archive of ``{name: content}`` and of symbolic links ``{name: target}`` (as Info-ZIP stores them)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def zip_of_folder(folder: Path) -> bytes:
    return zipped({str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()})


def upload(uploads: Uploads, name: str, content: bytes):
    return uploads.write([{"name": name, "size": len(content), "content": content}])


@pytest.fixture()
def uploads():
    uploads = Uploads(limit_mb=1)
    yield uploads
    uploads.close()


@pytest.mark.parametrize("content, reason", [
    (zipped({"series/../../escape.dcm": b"x"}), "'series/../../escape.dcm', which would land outside its folder"),
    (zipped({"/etc/cron.d/itermask": b"x"}), "'/etc/cron.d/itermask', which would land outside its folder"),
    (zipped({"a.dcm": b"x"}, links={"b.dcm": "/etc/passwd"}), r"holds a symbolic link \(b.dcm\)"),
    (zipped({f"{i}.dcm": bytes(400_000) for i in range(3)}), r"unpacks to 1.2 MB; this server accepts at most 1.0 MB"),
    (zipped({f"{i}.dcm": b"" for i in range(300)}), r"unpacks to 1.2 MB; this server accepts at most 1.0 MB"),
    (b"PK\x03\x04 not really a zip", "cannot open scan.zip: not a zip archive"),
], ids=["dot-dot", "absolute", "symlink", "bomb", "bomb-of-empty-files", "not-a-zip"])
def test_a_zip_escaping_its_folder_holding_links_or_unpacking_past_the_limit_is_refused(uploads, content, reason):
    with pytest.raises(ItermaskError, match=reason):
        upload(uploads, "scan.zip", content)
    assert list(uploads.folder.iterdir()) == []  # nothing half-written
    assert not Path("/etc/cron.d/itermask").exists()


def test_a_zip_whose_headers_understate_its_size_is_refused(uploads):
    """A bomb that lies: each member's size in the central directory says 100 bytes, its data inflates to 800 kB."""
    content = bytearray(zipped({f"{i}.dcm": bytes(800_000) for i in range(3)}))
    at = 0
    while (at := content.find(b"PK\x01\x02", at)) >= 0:
        struct.pack_into("<I", content, at + 24, 100)  # a central directory entry's uncompressed size
        at += 4
    with pytest.raises(ItermaskError, match="cannot unpack scan.zip .*Bad CRC-32"):
        upload(uploads, "scan.zip", bytes(content))
    assert list(uploads.folder.iterdir()) == []


def test_a_zip_without_exactly_one_volume_is_refused_naming_its_series(uploads, tmp_path):
    block = np.asarray(nib.load(CSTAR).dataobj)[30:94, 40:112, 50:62].astype(np.int16)
    shared = study()
    write_series(tmp_path / "two" / "a", block, geometry("axial_supine"), series_number=3, description="FLAIR",
                 shared=shared)
    write_series(tmp_path / "two" / "b", block, geometry("coronal"), series_number=4, description="FLAIR cor",
                 shared=shared)
    with pytest.raises(ItermaskError, match=r'two.zip holds 2 DICOM volumes \(3 "FLAIR"; 4 "FLAIR cor"\): give the'):
        upload(uploads, "two.zip", zip_of_folder(tmp_path / "two"))
    uploads.limit_bytes = 20_000_000  # the real diffusion series unpacks to 12 MB
    with pytest.raises(ItermaskError, match=r'dwi.zip holds no DICOM volume IterMask can read \(series 4 '
                                            r'"ep2d_diff_mddw_20_p2": it is 4D: 13 images at 1 position'):
        upload(uploads, "dwi.zip", zip_of_folder(SIEMENS / "DWI"))
    with pytest.raises(ItermaskError, match="notes.zip holds no DICOM series"):
        upload(uploads, "notes.zip", zipped({"notes/readme.txt": b"no images here"}))
    with pytest.raises(ItermaskError, match=r'two holds 2 DICOM volumes \(3 "FLAIR"; 4 "FLAIR cor"\)'):
        uploads.dicom_folder(tmp_path / "two")  # the same, named on the command line
    assert list(uploads.folder.iterdir()) == []


def test_a_folder_named_on_the_command_line_is_read_not_touched_and_its_volume_removed_once_opened(uploads, tmp_path):
    block = np.asarray(nib.load(CSTAR).dataobj)[30:94, 40:112, 50:62].astype(np.int16)
    write_series(tmp_path / "series", block, geometry("axial_supine"), series_number=3, description="FLAIR")
    files = sorted((tmp_path / "series").rglob("*"))
    scan = uploads.dicom_folder(tmp_path / "series")
    assert scan.series is not None and uploads.folder in scan.path.parents
    assert np.array_equal(read_volume(scan.path)[0], read_volume(tmp_path / "series")[0])
    nifti = tmp_path / "own.nii.gz"
    nifti.write_bytes(scan.path.read_bytes())
    uploads.remove([scan, scan._replace(path=nifti)])  # a scan's own file, named on the command line, stays
    assert list(uploads.folder.iterdir()) == [] and nifti.is_file()
    assert sorted((tmp_path / "series").rglob("*")) == files


def test_a_scan_not_read_from_dicom_has_no_dicom_seg():
    from itermask_web.dicom import segmentation_dicom

    with pytest.raises(ItermaskError, match="not read from DICOM"):
        segmentation_dicom(segmentation=None, logic=None, series=None)


# --- in the browser ---------------------------------------------------------------------------------------------------
pytest.importorskip("playwright")
from web_browser import CHROMIUM, Page, chromium, served  # noqa: E402


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_a_series_folder_on_the_command_line_opens_as_a_dicom_scan(tiny_model, tmp_path):
    block = np.asarray(nib.load(CSTAR).dataobj)[:, :, 40:100].astype(np.int16)
    write_series(tmp_path / "series", block, geometry("axial_supine"), series_number=7, description="FLAIR ax")
    with served("--model", str(tiny_model), "--device", "cpu", str(tmp_path / "series")) as (url, _), \
            chromium() as browser:
        page = Page(browser, url).opened()
        (volume,) = page.state("im_volumes")
        assert volume["title"].startswith("7_FLAIR_ax")
        page.press("im-initialize", until="s.im_ready && s.im_dicom")  # its SEG can be offered


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")
def test_a_zipped_series_is_segmented_painted_and_downloaded_as_a_seg_of_its_source(tiny_model, tmp_path):
    from test_dicom_seg import assert_is_a_seg_of

    flair = np.asarray(nib.load(CSTAR).dataobj).astype(np.int16)  # 5.6 MB of slices; zipped about a fifth of it
    write_series(tmp_path / "series", flair, geometry("axial_supine", spacing=(1.0, 1.0, 1.0)), series_number=5,
                 description="FLAIR axial")
    (source,) = find_series(tmp_path / "series")
    (tmp_path / "flair.zip").write_bytes(zip_of_folder(tmp_path / "series"))
    with served("--model", str(tiny_model), "--device", "cpu", "--max-upload-mb", "8") as (url, _), \
            chromium() as browser:
        page = Page(browser, url).opened()
        page.page.set_input_files("#im-upload", str(tmp_path / "flair.zip"))
        page.wait("s.im_volumes.some(v => v.title.startsWith('5_FLAIR_axial'))")
        page.press("im-segment", until="s.im_stepped && s.im_status.includes('Converged')")
        page.press("im-apply", until="s.im_has_result && s.im_dicom")
        page.press("im-effect-paint", until="s.im_active_effect === 'paint'")
        edits = page.state("im_edits")
        page.stroke([(0.35, 0.5), (0.5, 0.5), (0.65, 0.45)])
        page.wait(f"s.im_edits > {edits}")
        page.press("im-effect-none", until="s.im_active_effect === 'none'")
        mask_file = page.download("im-download-nii", tmp_path)
        seg_file = page.download("im-download-dcm", tmp_path)
    assert seg_file.name == "segmentation.dcm"
    mask, affine = read_volume(mask_file)
    # on the series' grid (Slicer may store its slices in the other order: compared in the closest RAS axes)
    series_grid = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(flair.shape), read_volume(tmp_path / "series")[1]))
    mask_grid = nib.as_closest_canonical(nib.Nifti1Image(np.zeros(mask.shape), affine))
    assert mask_grid.shape == series_grid.shape and np.abs(mask_grid.affine - series_grid.affine).max() < 1e-4
    assert mask.any()
    assert_is_a_seg_of(hd.seg.segread(seg_file), source, mask > 0, affine, model="tiny-flair",
                       algorithm_type="SEMIAUTOMATIC")
