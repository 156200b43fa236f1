"""One call from a scan to a segmentation, for scripts and batch use."""
from __future__ import annotations

import numpy as np

from .bundle import ModelBundle, load_model
from .session import Result, Session


def segment(image: np.ndarray, brain_mask: np.ndarray | None = None, affine: np.ndarray | None = None,
            model: str | ModelBundle = "flair-2d", policy: str | None = None, seed: int = 0,
            device: str = "auto", callback=None) -> Result:
    """Run IterMask to convergence on one scan; the result lies on the scan's own grid. ``policy`` None: the
    model's default, segmented by its validated rule (see :mod:`itermask.rules`).

    >>> result = segment(flair, brain, affine, model="flair-2d")        # doctest: +SKIP
    >>> result.mask.shape == flair.shape                                 # doctest: +SKIP
    True
    """
    bundle = model if isinstance(model, ModelBundle) else load_model(model)
    return Session(bundle, image, affine, brain_mask, policy=policy, seed=seed, device=device).run(callback)
