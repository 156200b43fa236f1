"""A built-in example scan any user can make: a FLAIR-like brain from nilearn's MNI152 tissue templates (in the
nilearn wheel, no download) with an inserted hyperintense lesion whose exact mask is written beside it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ItermaskError

# FLAIR contrast: grey matter brighter than white matter, CSF suppressed, lesions bright.
_GREY, _WHITE, _CSF, _LESION = 1.0, 0.72, 0.12, 1.65


def make_example(seed: int = 0, lesion_centre_mm=(28.0, -12.0, 22.0), lesion_radii_mm=(14.0, 11.0, 12.0)):
    """(image, brain, lesion, affine): a FLAIR-like MNI152 volume at 1 mm with one ellipsoidal lesion."""
    try:
        from nilearn import datasets
    except ImportError:
        raise ItermaskError("the built-in example needs nilearn: pip install nilearn") from None
    grey = datasets.load_mni152_gm_template(resolution=1)
    affine = grey.affine
    grey = grey.get_fdata()
    white = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0.5
    csf = np.clip(1 - grey - white, 0, 1)
    image = _GREY * grey + _WHITE * white + _CSF * csf
    ijk = np.indices(brain.shape).reshape(3, -1).T
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    radius = np.sqrt((((ras - lesion_centre_mm) / lesion_radii_mm) ** 2).sum(1)).reshape(brain.shape)
    weight = np.clip(1.5 - radius, 0, 1)  # soft 1-voxel-ish rim like a real lesion border
    rng = np.random.default_rng(seed)
    image = (1 - weight) * image + weight * (_LESION + 0.08 * rng.standard_normal(brain.shape))
    image = image + 0.03 * rng.standard_normal(brain.shape)
    image = np.where(brain, image * 100, 0).astype(np.float32)
    lesion = (radius <= 1.0) & brain
    return image, brain.astype(np.uint8), lesion.astype(np.uint8), affine


def write_example(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``example_flair``, ``example_brainmask`` and ``example_lesion`` (.nii.gz); return the scan and mask paths."""
    from .io import write_nifti

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image, brain, lesion, affine = make_example(seed)
    paths = {name: folder / f"example_{name}.nii.gz" for name in ("flair", "brainmask", "lesion")}
    for name, array in (("flair", image), ("brainmask", brain), ("lesion", lesion)):
        write_nifti(paths[name], array, affine)
    return paths["flair"], paths["brainmask"]
