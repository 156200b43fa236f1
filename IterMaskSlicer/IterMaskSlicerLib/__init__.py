"""Slicer glue for IterMask: MRML nodes <-> numpy, the interactive session, overlays, sequences and plots.

No Qt here: everything runs (and is tested) on a plain ``slicer-core`` MRML scene. ``IterMaskSlicer.py`` holds the
thin Qt widget on top.
"""
