"""IterMask: unsupervised brain-lesion segmentation by iterative spatial and frequency masking.

The core needs only numpy and torch, so it runs inside 3D Slicer's Python::

    import itermask
    model = itermask.load_model("flair-2d")
    session = itermask.Session(model, image, affine, brain_mask, seed=0)
    session.step(); session.back(); session.set_tau(0.5)
    result = session.run()           # result.mask, result.anomaly_map on the input grid
"""
from .bundle import ModelBundle, available_models, default_model_name, load_model
from .errors import ItermaskError
from .segment import segment
from .session import Iteration, Result, Session

__all__ = ["ItermaskError", "Iteration", "ModelBundle", "Result", "Session", "available_models",
           "default_model_name", "load_model", "segment"]
__version__ = "0.1.0"
