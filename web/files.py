"""Files in and out of the page: uploads land in one private temporary folder and nowhere else; downloads are the
result on the input grid, as a NIfTI labelmap or a Slicer ``.seg.nrrd``.

An upload arrives whole in the server's memory (trame sends it over the websocket in chunks); the page refuses a
file above the limit before sending it, and the server checks again before writing a byte.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from trame.app.file_upload import ClientFile

from itermask.errors import ItermaskError
from itermask.io import write_nifti
from IterMaskSlicerLib import nodes

# Single-file volume formats (a .nhdr or .mhd header would need its data file beside it).
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")


def safe_name(name: str) -> str:
    """The file name of an upload without any folder part; refuses names that are not a volume file."""
    base = Path(str(name).replace("\\", "/")).name
    if not base or base.startswith(".") or not base.lower().endswith(UPLOAD_SUFFIXES):
        raise ItermaskError(f"cannot open {name!r}: upload a {', '.join(UPLOAD_SUFFIXES)} volume")
    return base


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

    def write(self, files: list[dict]) -> list[Path]:
        """Each file of a trame upload (``{"name", "size", "content"}``) in the folder; all refused if one is bad."""
        uploads = [ClientFile(f) for f in files]
        self.check_size(sum(len(u.content or b"") for u in uploads))
        names = [safe_name(u.name) for u in uploads]
        paths = []
        for name, upload in zip(names, uploads):
            path = Path(tempfile.mkdtemp(dir=self.folder)) / name  # its own folder: same names never collide
            path.write_bytes(upload.content or b"")
            paths.append(path)
        return paths

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
