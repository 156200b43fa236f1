"""SimpleITK images (LPS physical space) as the core's arrays: (i, j, k) voxels and a voxel → RAS mm affine.

Used by :mod:`itermask.io` (MetaImage) and :mod:`itermask.dicom` (a series' voxels), which imports nothing else of
``io``. SimpleITK is imported only when an image is converted.
"""
from __future__ import annotations

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_array_affine(image) -> tuple[np.ndarray, np.ndarray]:
    """(array, affine) of a 3D SimpleITK image, whose physical space is LPS:
    ``LPS = origin + direction · diag(spacing) · ijk``."""
    import SimpleITK as sitk

    affine = np.eye(4)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=np.float64)
    affine[:3, 3] = image.GetOrigin()
    # SimpleITK's arrays are (k, j, i); the core wants (i, j, k).
    return np.asarray(_SitkPixels(image, sitk)).transpose(2, 1, 0), LPS_TO_RAS @ affine


class _SitkPixels:
    """The voxels of a SimpleITK image as a numpy array without a copy (a 384-slice series is 75 MB): the array
    keeps this object, and so the image that owns the memory, alive."""

    def __init__(self, image, sitk):
        self.image = image
        interface = dict(sitk.GetArrayViewFromImage(image).__array_interface__)  # the view makes the buffer unique
        interface["data"] = (interface["data"][0], False)  # so writing into it, like any reader's array, is safe
        self.__array_interface__ = interface
