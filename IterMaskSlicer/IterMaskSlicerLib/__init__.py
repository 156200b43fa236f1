"""Slicer glue for IterMask: MRML nodes <-> numpy, the MRML logic, plots, and the worker process that runs the model.

The logic (``logic.py``) joins three parts: the session driver (``driver.py``: commands to the worker through
``client.py``), the input-grid caches (``caches.py``) and the output nodes (``outputs.py``, with ``plots.py``);
``parameters.py`` writes the module's parameter node. No Qt and no torch on the Slicer side: everything here but
``worker.py`` and ``sampling.py`` runs (and is tested) on a plain ``slicer-core`` MRML scene; those two run in their
own process with ``PythonSlicer``. ``IterMaskSlicer.py`` holds the thin Qt widget on top.
"""
