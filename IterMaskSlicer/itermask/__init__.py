"""IterMask: unsupervised brain-lesion segmentation by iterative spatial and frequency masking.

The core needs only numpy and torch, so it runs inside 3D Slicer's Python::

    import itermask
    model = itermask.load_model("flair-2d")
    session = itermask.Session(model, image, affine, brain_mask, seed=0)
    session.step(); session.back(); session.set_tau(0.5)
    result = session.run()           # result.mask, result.anomaly_map on the input grid

Names are imported on first use, so ``itermask.available_models()`` and ``itermask.errors`` work without torch
(Slicer lists models before torch is installed).
"""
from importlib import import_module

_HOMES = {"ModelBundle": "bundle", "load_model": "bundle", "default_model_name": "discovery",
          "available_models": "discovery", "validated_default": "discovery", "ItermaskError": "errors", "segment": "segment",
          "Iteration": "session", "Result": "session", "Session": "session"}

__all__ = sorted(_HOMES)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'itermask' has no attribute {name!r}")
    value = getattr(import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value
