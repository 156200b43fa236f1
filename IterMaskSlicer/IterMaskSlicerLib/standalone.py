"""The two globals of the Slicer application that :mod:`slicer.util` reads, for a scene made outside the application
(PyPI's ``slicer-core``: the web page, the tests).

Inside Slicer the application sets ``slicer.mrmlScene`` and fills ``slicer.modules`` (a Qt-side registry) itself;
:mod:`.logic` and :mod:`.outputs` reach the scene and the Sequences logic through them.
"""
from __future__ import annotations

import types

import slicer


def install_globals(scene, logics: dict) -> None:
    """Make ``scene`` Slicer's current scene and ``logics`` (``{"sequences": vtkSlicerSequencesLogic, …}``, keys as
    ``slicer.modules`` names them) its module logics."""
    slicer.mrmlScene = scene
    slicer.modules = types.SimpleNamespace(**{name: types.SimpleNamespace(logic=(lambda lg=lg: lg))
                                              for name, lg in logics.items()})
