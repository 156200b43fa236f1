"""The nodes a session is shown in: the iteration's mask (filled label layer), the segmentation preview (an outline: what
Apply exports), the anomaly map (optional heat foreground), every iteration as a Sequence item, and the τ(t) plot.

All on the input volume's grid and under its transform, so they overlay it whatever its orientation. The arrays come
from an :class:`.caches.InputGridCache`; writing into a node's own voxels touches only the brain's.
"""
from __future__ import annotations

import numpy as np
import slicer

from . import nodes
from .plots import TauPlot

MASK_COLOR = (1.0, 0.55, 0.0)     # the iteration mask: filled label layer
PREVIEW_COLOR = (0.2, 0.9, 1.0)   # the thresholded map (what Apply makes): outline
RESULT_COLOR = (0.9, 0.2, 0.9)    # what Apply made (a person edits it): unlike both, to colour-blind eyes too
COLOR_TABLE = "IterMask colors"   # shared by every session's mask, so it stays in the scene


class OutputNodes:
    """Creates the output nodes for ``volume`` in ``scene`` (its name prefixes theirs) and keeps them up to date."""

    def __init__(self, scene, volume):
        self.scene, self.volume = scene, volume
        name = volume.GetName()
        shape = slicer.util.arrayFromVolume(volume).shape  # (k, j, i); set_voxels takes (i, j, k): transposed views
        self.mask = nodes.new_labelmap(scene, f"{name} IterMask mask", volume)
        nodes.set_voxels(self.mask, np.zeros(shape, np.uint8).T)
        self.mask.GetDisplayNode().SetAndObserveColorNodeID(self._mask_colors().GetID())
        self.anomaly_map = nodes.new_scalar_volume(scene, f"{name} IterMask anomaly map", volume)
        nodes.set_voxels(self.anomaly_map, np.zeros(shape, np.float32).T)
        self.preview = nodes.new_segmentation(scene, f"{name} IterMask preview", volume, "Preview", PREVIEW_COLOR)
        display = self.preview.GetDisplayNode()
        display.SetVisibility2DFill(False)   # an outline, so the filled iteration mask stays visible beneath it
        display.SetVisibility2DOutline(True)
        display.SetSliceIntersectionThickness(2)
        self.sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{name} IterMask iterations")
        self.sequence.SetIndexName("iteration")
        self.sequence.SetIndexType(self.sequence.NumericIndex)
        self.browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} IterMask browser")
        self.browser.SetAndObserveMasterSequenceNodeID(self.sequence.GetID())
        self.plot = TauPlot(scene, name)

    def roles(self) -> dict:
        """Each output by the role the parameter node references it under."""
        return {"mask": self.mask, "preview": self.preview, "anomaly_map": self.anomaly_map,
                "sequence": self.sequence, "browser": self.browser, "plot": self.plot.chart}

    def remove(self) -> None:
        """Remove every output (with the plot's series and table, and the browser's proxy node)."""
        proxy = self.browser.GetProxyNode(self.sequence)
        nodes.remove_nodes(self.scene, [self.mask, self.preview, self.anomaly_map, self.sequence, self.browser, proxy,
                                        *self.plot.nodes()])

    def _mask_colors(self):
        colors = self.scene.GetFirstNodeByName(COLOR_TABLE)
        if colors is None:
            colors = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", COLOR_TABLE)
            colors.SetTypeToUser()
            colors.SetNumberOfColors(2)
            colors.SetColor(0, "background", 0, 0, 0, 0)
            colors.SetColor(1, "IterMask", *MASK_COLOR, 1.0)
        return colors

    # --- showing ----------------------------------------------------------------------------------------------
    def show_plot(self, columns: dict[str, list[float]]) -> None:
        self.plot.update_columns({k: np.asarray(v, float) for k, v in columns.items()})

    def show_mask(self, cache, index: int) -> None:
        """Iteration ``index``'s mask in the label layer."""
        cache.write_into(slicer.util.arrayFromVolume(self.mask), cache.mask_values(index))
        slicer.util.arrayFromVolumeModified(self.mask)

    def show_map(self, cache) -> None:
        cache.write_into(slicer.util.arrayFromVolume(self.anomaly_map), cache.map_values)
        slicer.util.arrayFromVolumeModified(self.anomaly_map)

    def style_map(self, cache, tau: float) -> None:
        """Heat colours from τ (errors below it, confidently normal, are transparent) to the map's 99.9 % quantile."""
        display = self.anomaly_map.GetDisplayNode()
        heat = self.scene.GetFirstNodeByName("PET-Heat")
        if heat is not None:
            display.SetAndObserveColorNodeID(heat.GetID())
        high = max(tau if cache.map_high is None else cache.map_high, tau * 1.01)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(tau, high)
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(tau)

    def show_preview(self, mask: np.ndarray) -> None:
        """The preview segmentation's voxels: a (k, j, i) mask."""
        nodes.set_segment_voxels(self.preview, mask.T, self.volume)

    def sync_sequence(self, count: int, position: int, cache):
        """One sequence item per computed iteration: drop those a branch or an undo discarded, add new ones; then the
        browser on item ``position`` (the shown iteration; none when negative). A generator that yields after each
        new item (each is a volume), so the caller can spread them out."""
        for n in range(self.sequence.GetNumberOfDataNodes() - 1, -1, -1):
            if int(self.sequence.GetNthIndexValue(n)) >= count:
                self.sequence.RemoveDataNodeAtValue(self.sequence.GetNthIndexValue(n))
        for index in range(self.sequence.GetNumberOfDataNodes(), count):
            empty = slicer.vtkMRMLLabelMapVolumeNode()
            empty.CopyOrientation(self.volume)
            item = self.sequence.SetDataNodeAtValue(empty, str(index))  # a copy: filling it spares a second one
            slicer.util.updateVolumeFromArray(item, cache.volume(cache.mask_values(index).view(np.uint8)))
            yield
        if self.sequence.GetNumberOfDataNodes() and self.browser.GetProxyNode(self.sequence) is None:
            slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(self.browser)  # what the browser plays
        if position >= 0:
            self.browser.SetSelectedItemNumber(position)

    def show_in_slice_views(self, show_anomaly_map: bool = False, opacity: float = 0.5) -> None:
        """Input as background, the mask as label layer (filled), optionally the anomaly map as foreground, in every
        view; the preview segmentation draws its outline on top by itself."""
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            composite.SetBackgroundVolumeID(self.volume.GetID())
            composite.SetLabelVolumeID(self.mask.GetID())
            composite.SetLabelOpacity(0.4)
            composite.SetForegroundVolumeID(self.anomaly_map.GetID() if show_anomaly_map else None)
            composite.SetForegroundOpacity(opacity if show_anomaly_map else 0.0)
