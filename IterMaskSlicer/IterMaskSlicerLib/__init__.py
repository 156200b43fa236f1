"""Slicer glue for IterMask: MRML nodes <-> numpy, the MRML logic, plots, and the worker process that runs the model.

No Qt and no torch on the Slicer side: everything here but ``worker.py`` runs (and is tested) on a plain
``slicer-core`` MRML scene; ``worker.py`` runs in its own process with ``PythonSlicer``. ``IterMaskSlicer.py`` holds
the thin Qt widget on top.
"""
