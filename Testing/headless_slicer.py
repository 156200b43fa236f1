"""A real MRML scene from PyPI's slicer-core, set up the way the Slicer application sets up its own.

Used by the tests and the interaction benchmark. The Colors, Volumes, Segmentations and Sequences logics are real;
only ``slicer.modules`` (a Qt-side registry in the application) is filled in by hand so ``slicer.util`` finds them.
"""
from __future__ import annotations

import slicer

from IterMaskSlicerLib.standalone import install_globals


def make_scene():
    """A new scene with application, colour, volumes, segmentations and sequences logics and a Red axial slice view,
    installed as ``slicer.mrmlScene``. The slice logic is kept on the scene (``scene.slice_logic``) for rendering."""
    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app_logic)  # before SetMRMLScene, or the colour nodes are not made
    colors.SetMRMLScene(scene)
    app_logic.SetColorLogic(colors)
    app_logic.SetModuleLogic("Colors", colors)
    logics = {"colors": colors}
    for key, module, cls in (("volumes", "Volumes", "vtkSlicerVolumesLogic"),
                             ("segmentations", "Segmentations", "vtkSlicerSegmentationsModuleLogic"),
                             ("sequences", "Sequences", "vtkSlicerSequencesLogic")):
        logic = getattr(slicer, cls)()
        logic.SetMRMLApplicationLogic(app_logic)
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(module, logic)
        logics[key] = logic
    slice_logic = slicer.vtkMRMLSliceLogic()
    slice_logic.SetMRMLApplicationLogic(app_logic)
    slice_logic.SetMRMLScene(scene)
    slice_logic.AddSliceNode("Red").SetOrientationToAxial()
    install_globals(scene, logics)
    scene.slice_logic = slice_logic
    scene.app_logic = app_logic
    return scene
