"""MRML volume, labelmap and segmentation nodes <-> numpy arrays in the core's (i, j, k) + affine convention.

Only numpy and Slicer here: torch runs in the worker process, never in Slicer's.

Slicer arrays are indexed (k, j, i); the core's are (i, j, k) with a voxel → RAS affine. Output nodes copy the
input's IJK→RAS matrix and parent transform, so they overlay the input exactly whatever its orientation.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import slicer
import vtk

from itermask.dicom_seg import CATEGORY, TYPE
from itermask.errors import ItermaskError


def ijk_to_ras(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def volume_arrays(volume_node) -> tuple[np.ndarray, np.ndarray]:
    """(image (i, j, k), affine) of a scalar volume node; the image is a read-only view, never modified."""
    if volume_node is None or volume_node.GetImageData() is None:
        raise ItermaskError("select an input volume that has image data")
    kji = slicer.util.arrayFromVolume(volume_node)
    if kji.ndim != 3:
        raise ItermaskError(f"the input volume must be a single 3D scalar volume, not {kji.ndim}D data")
    image = kji.transpose(2, 1, 0)
    image.flags.writeable = False
    return image, ijk_to_ras(volume_node)


def mask_array(mask_node, volume_node) -> np.ndarray | None:
    """A mask on the input volume's grid (i, j, k) from a labelmap (resampled if its grid differs) or a
    segmentation (all segments together); None when no node is given."""
    if mask_node is None:
        return None
    if mask_node.IsA("vtkMRMLSegmentationNode"):
        return _segments_on_grid(mask_node, volume_node)
    mask, mask_affine = volume_arrays(mask_node)
    image_shape = tuple(volume_node.GetImageData().GetDimensions())
    if mask.shape == image_shape and np.allclose(mask_affine, ijk_to_ras(volume_node), atol=1e-4):
        return mask != 0
    return _labelmap_on_grid(mask_node, volume_node)


def _labelmap_on_grid(labelmap, reference) -> np.ndarray:
    """A labelmap on another grid, resampled onto ``reference``'s by Slicer's segmentation logic (no torch on the
    Slicer side), through a temporary segmentation."""
    with temporary_nodes(labelmap.GetScene()) as scene:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
        if segmentation.GetSegmentation().GetNumberOfSegments() == 0:  # an empty mask: the worker will say so
            return np.zeros(reference.GetImageData().GetDimensions(), bool)
        return _segments_on_grid(segmentation, reference)


def _segments_on_grid(segmentation_node, reference) -> np.ndarray:
    """All segments together as an (i, j, k) bool mask on ``reference``'s grid, through a temporary labelmap that is
    removed with everything the export adds (slicer.util's array helper leaves a display node behind)."""
    if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        raise ItermaskError(f"segmentation {segmentation_node.GetName()!r} has no segments")
    with temporary_nodes(segmentation_node.GetScene()) as scene:
        labelmap = new_labelmap(scene, f"{segmentation_node.GetName()} (export)", reference)
        ids = vtk.vtkStringArray()
        segmentation_node.GetSegmentation().GetSegmentIDs(ids)
        slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(segmentation_node, ids, labelmap,
                                                                             reference)
        return slicer.util.arrayFromVolume(labelmap).transpose(2, 1, 0) > 0


def _output_on_grid_of(scene, class_name: str, name: str, reference):
    node = scene.AddNewNodeByClass(class_name, name)
    node.CopyOrientation(reference)
    node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    return node


def new_labelmap(scene, name: str, reference):
    """An empty labelmap on ``reference``'s grid (and under its transform)."""
    return _output_on_grid_of(scene, "vtkMRMLLabelMapVolumeNode", name, reference)


def new_scalar_volume(scene, name: str, reference):
    return _output_on_grid_of(scene, "vtkMRMLScalarVolumeNode", name, reference)


def set_voxels(node, ijk: np.ndarray) -> None:
    """Replace a volume node's voxels with an (i, j, k) array (copied into VTK memory)."""
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(ijk.transpose(2, 1, 0)))
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()


# What the segment is, in DICOM terms, so DICOM SEG export works: the codes the CLI's DICOM SEG uses (SNOMED CT
# "Morphologically Altered Structure" / "Lesion"), the way Slicer's terminology module writes an entry.
TERMINOLOGY_ENTRY = ("Segmentation category and type - 3D Slicer General Anatomy list"
                     f"~{CATEGORY[1]}^{CATEGORY[0]}^{CATEGORY[2]}~{TYPE[1]}^{TYPE[0]}^{TYPE[2]}~^^"
                     "~Anatomic codes - DICOM master list~^^~^^")


def new_segmentation(scene, name: str, reference, segment_name: str, color):
    """A segmentation node on ``reference``'s geometry with one empty, named, coloured lesion segment."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    node.SetAndObserveTransformNodeID(reference.GetTransformNodeID())
    segment_id = node.GetSegmentation().AddEmptySegment("", segment_name, list(color))
    segment = node.GetSegmentation().GetSegment(segment_id)
    segment.SetNameAutoGenerated(False)
    segment.SetColorAutoGenerated(False)
    segment.SetTag(segment.GetTerminologyEntryTagName(), TERMINOLOGY_ENTRY)
    return node


def set_segment_voxels(node, mask: np.ndarray, reference) -> None:
    """Replace the voxels of ``node``'s first segment with an (i, j, k) mask on ``reference``'s grid (name, colour
    and terminology stay). Goes through a temporary labelmap, removed afterwards with all the import adds."""
    segment_ids = vtk.vtkStringArray()
    segment_ids.InsertNextValue(node.GetSegmentation().GetNthSegmentID(0))
    with temporary_nodes(node.GetScene()) as scene:
        labelmap = new_labelmap(scene, f"{node.GetName()} (import)", reference)
        set_voxels(labelmap, mask.astype(np.uint8))
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, node,
                                                                                       segment_ids):
            raise ItermaskError("could not turn the mask into a segmentation")


def segmentation_from_mask(scene, mask: np.ndarray, reference, name: str, segment_name: str,
                           color=(1.0, 0.55, 0.0)):
    """A segmentation node with one named lesion segment from an (i, j, k) mask on ``reference``'s grid."""
    node = new_segmentation(scene, name, reference, segment_name, color)
    set_segment_voxels(node, mask, reference)
    return node


def node_ids(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def remove_nodes(scene, doomed) -> None:
    """Remove nodes together with their display and storage nodes (RemoveNode leaves those behind)."""
    scene.StartState(scene.BatchProcessState)
    for node in doomed:
        if node is None or scene.GetNodeByID(node.GetID()) is None:
            continue
        helpers = []
        if node.IsA("vtkMRMLDisplayableNode"):
            helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
        if node.IsA("vtkMRMLStorableNode"):
            helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
        for helper in helpers + [node]:
            if helper is not None:
                scene.RemoveNode(helper)
    scene.EndState(scene.BatchProcessState)


def remove_added_since(scene, before: set[str]) -> None:
    remove_nodes(scene, [scene.GetNodeByID(i) for i in node_ids(scene) - before])


@contextmanager
def temporary_nodes(scene):
    """Every node added inside the block is removed when it ends."""
    before = node_ids(scene)
    try:
        yield scene
    finally:
        remove_added_since(scene, before)


@contextmanager
def scene_unchanged_on_failure(scene):
    """Remove every node added inside the block if it raises (cancel included): the scene is left as it was."""
    before = node_ids(scene)
    try:
        yield
    except BaseException:
        remove_added_since(scene, before)
        raise
