"""Files in and out of the page: uploads land in one private temporary folder and nowhere else; downloads are the
result on the input grid, as a NIfTI labelmap or a Slicer ``.seg.nrrd`` (and a DICOM SEG for a DICOM scan,
:mod:`.dicom`).

An upload arrives whole in the server's memory (trame sends it over the websocket in chunks); the page refuses a
file above the limit before sending it, and the server checks again before writing a byte. A ``.zip`` (a DICOM
series) is checked before anything is unpacked: every member inside its folder, no links, and its unpacked size
within the same limit.
"""
from __future__ import annotations

import io
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from trame.app.file_upload import ClientFile

from itermask.errors import ItermaskError
from itermask.io import write_nifti
from IterMaskSlicerLib import nodes

# Single-file volume formats (a .nhdr or .mhd header would need its data file beside it), and a zipped DICOM series.
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".zip")
DISK_BLOCK = 4096  # bytes a file takes on disk at least


def safe_name(name: str) -> str:
    """The file name of an upload without any folder part; refuses names that are not a volume file."""
    base = Path(str(name).replace("\\", "/")).name
    if not base or base.startswith(".") or not base.lower().endswith(UPLOAD_SUFFIXES):
        raise ItermaskError(f"cannot open {name!r}: upload a {', '.join(UPLOAD_SUFFIXES[:-1])} volume or a .zip "
                            "of a DICOM series")
    return base


class Scan(NamedTuple):
    """An upload as the page opens it: a volume file, and the DICOM series it was read from (None: not DICOM)."""
    path: Path
    series: object = None


def unzip(content: bytes, name: str, folder: Path, limit_bytes: int) -> None:
    """The files of the zip archive ``content`` (the upload ``name``) into the new folder ``folder``; everything
    refused, and nothing written, if a member would land outside it, is a link, or the members together hold more
    than ``limit_bytes`` (a zip bomb), each counted as at least a disk block (so a bomb of empty files is one too).
    :mod:`zipfile` never gives more bytes than a member's header says (and refuses a member whose data does not match
    it), so the headers' sizes bound what is written."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as exc:
        raise ItermaskError(f"cannot open {name}: not a zip archive ({exc})") from None
    members = [m for m in archive.infolist() if not m.is_dir()]
    root = folder.resolve()
    for member in members:
        if stat.S_ISLNK(member.external_attr >> 16):
            raise ItermaskError(f"{name} holds a symbolic link ({member.filename}): zip the files themselves")
        if not (root / member.filename).resolve().is_relative_to(root):
            raise ItermaskError(f"{name} holds {member.filename!r}, which would land outside its folder")
    unpacked = sum(max(m.file_size, DISK_BLOCK) for m in members)
    if unpacked > limit_bytes:
        raise ItermaskError(f"{name} unpacks to {unpacked / 1e6:.1f} MB; this server accepts at most "
                            f"{limit_bytes / 1e6:.1f} MB (itermask web --max-upload-mb)")
    try:
        for member in members:
            target = root / member.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
    except (zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError, EOFError, OSError) as exc:
        raise ItermaskError(f"cannot unpack {name} ({exc})") from None  # damaged, encrypted, exotic, disk full


class Uploads:
    """Writes uploaded files into a private temporary folder (removed with :meth:`close`).

    Args:
        limit_mb: the most an upload (all its files together) may hold, in MB.
    """

    def __init__(self, limit_mb: float):
        self.limit_bytes = int(limit_mb * 1e6)
        self._folder = tempfile.TemporaryDirectory(prefix="itermask-web-uploads-")
        self.folder = Path(self._folder.name)

    def check_size(self, size: int) -> None:
        """Refuse an upload of ``size`` bytes above the limit."""
        if size > self.limit_bytes:
            raise ItermaskError(f"the upload holds {size / 1e6:.1f} MB; this server accepts at most "
                                f"{self.limit_bytes / 1e6:.1f} MB (itermask web --max-upload-mb)")

    def write(self, files: list[dict]) -> list[Scan]:
        """Each file of a trame upload (``{"name", "size", "content"}``) in the folder, a zipped DICOM series as the
        NIfTI of its volume; all refused, and nothing left in the folder, if one is bad. :meth:`remove` them once
        opened."""
        uploads = [ClientFile(f) for f in files]
        self.check_size(sum(len(u.content or b"") for u in uploads))
        names = [safe_name(u.name) for u in uploads]
        folders, scans = [], []
        try:
            for name, upload in zip(names, uploads):
                folders.append(Path(tempfile.mkdtemp(dir=self.folder)))  # its own folder: same names never collide
                scans.append(self._scan(upload.content or b"", name, folders[-1]))
        except BaseException:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return scans

    def _scan(self, content: bytes, name: str, folder: Path) -> Scan:
        """One upload in ``folder``: the file itself, or a zipped series as ``folder/<series name>.nii.gz`` (the
        unpacked files deleted once read)."""
        if not name.lower().endswith(".zip"):
            (folder / name).write_bytes(content)
            return Scan(folder / name)
        from .dicom import volume_of_series

        unpacked = folder / "unpacked"
        try:
            unzip(content, name, unpacked, self.limit_bytes)
            return volume_of_series(unpacked, name, folder)
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)

    def dicom_folder(self, source: Path) -> Scan:
        """A folder of a DICOM series named on the command line, as the NIfTI of its volume in the private folder
        (the source is only read); :meth:`remove` it once opened."""
        from .dicom import volume_of_series

        folder = Path(tempfile.mkdtemp(dir=self.folder))
        try:
            return volume_of_series(source, str(source), folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def remove(self, scans: list[Scan]) -> None:
        """Delete the files this class wrote for ``scans`` (and their folders) once the scene holds them; a scan's
        own file (named on the command line) stays."""
        for scan in scans:
            if self.folder in scan.path.parents:
                shutil.rmtree(scan.path.parent, ignore_errors=True)

    def close(self) -> None:
        self._folder.cleanup()


def mask_nifti(segmentation, volume) -> bytes:
    """All segments of ``segmentation`` as a uint8 labelmap on ``volume``'s grid, as ``.nii.gz`` bytes."""
    mask = nodes.mask_array(segmentation, volume).astype(np.uint8)
    with tempfile.TemporaryDirectory(prefix="itermask-web-") as folder:
        path = Path(folder) / "mask.nii.gz"
        write_nifti(path, mask, nodes.ijk_to_ras(volume))
        return path.read_bytes()


def segmentation_nrrd(segmentation) -> bytes:
    """``segmentation`` as Slicer writes a ``.seg.nrrd`` (segment names, colours and terminology kept)."""
    with tempfile.TemporaryDirectory(prefix="itermask-web-") as folder:
        path = Path(folder) / "result.seg.nrrd"
        storage = segmentation.CreateDefaultStorageNode()
        storage.SetFileName(str(path))
        if not storage.WriteData(segmentation):
            raise ItermaskError("could not write the segmentation")
        return path.read_bytes()
