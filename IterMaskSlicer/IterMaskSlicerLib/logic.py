"""IterMask on MRML nodes: one interactive session per input volume, shown as labelmaps, a sequence and a plot.

Everything a user sees lives in the scene: the current iteration's mask (label layer), the anomaly map (optional
foreground), a live segmentation preview, every iteration as a Sequence item, τ(t) in a plot chart, and the
settings in a parameter node. The input volume is never modified. No Qt: the widget drives this class.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np
import slicer
import torch

import itermask
from itermask.errors import ItermaskError

from . import nodes
from .plots import TauPlot

PARAMETER_NODE_NAME = "IterMaskSlicer"
MASK_COLOR = (1.0, 0.55, 0.0)


def _sequences_logic():
    return slicer.modules.sequences.logic()


class RunCancelled(Exception):
    """Raised inside a run when the user cancels; the run's changes are undone."""


class IterMaskLogic:
    """Interactive IterMask on a scene.

    Args:
        scene: the MRML scene (default ``slicer.mrmlScene``).
        load_model: bundle loader (a name or path → :class:`itermask.ModelBundle`); injected for tests.

    Typical use (what the module's buttons call)::

        logic.initialize(volume, brain_mask_node, model="flair-2d", policy="itermask2")
        logic.step(); logic.back(); logic.seek(2); logic.set_tau(0.5); logic.step()
        logic.run(progress=print, cancelled=lambda: False)
        logic.preview_threshold(3.0)
        segmentation = logic.apply("Lesion")
    """

    anomaly_maps_kept = 8  # anomaly maps on the input grid cached for scrubbing (the rest are recomputed)

    def __init__(self, scene=None, load_model=itermask.load_model):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self._load_model = load_model
        self._models: dict[str, itermask.ModelBundle] = {}
        self.session: itermask.Session | None = None
        self.volume = None
        self.outputs: dict[str, object] = {}
        self._masks: dict[int, np.ndarray] = {}     # iteration → packed bits of its mask on the input grid
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    # --- models -----------------------------------------------------------------------------------------------
    def model(self, name_or_path) -> itermask.ModelBundle:
        """A bundle by name or path, loaded once per logic."""
        if isinstance(name_or_path, itermask.ModelBundle):
            return name_or_path
        key = str(name_or_path)
        if key not in self._models:
            self._models[key] = self._load_model(key)
        return self._models[key]

    # --- one call for scripts ---------------------------------------------------------------------------------
    def segment(self, volume_node, brain_mask_node=None, model="flair-2d", policy="itermask2", seed=0,
                segment_name="Anomaly"):
        """Segment a volume node to convergence and return a new segmentation node (no other node is created).

        >>> seg = slicer.modules.itermaskslicer.logic().segment(getNode("FLAIR"))   # doctest: +SKIP
        """
        image, affine = nodes.volume_arrays(volume_node)
        result = itermask.segment(image, nodes.mask_array(brain_mask_node, volume_node), affine,
                                  model=self.model(model), policy=policy, seed=seed)
        return nodes.segmentation_from_mask(self.scene, result.mask.astype(bool), volume_node,
                                            f"{volume_node.GetName()} IterMask", segment_name, MASK_COLOR)

    # --- interactive session ----------------------------------------------------------------------------------
    def initialize(self, volume_node, brain_mask_node=None, model="flair-2d", policy="itermask2", seed=0):
        """Open a session on ``volume_node`` and create the output nodes; the first step is not run yet."""
        image, affine = nodes.volume_arrays(volume_node)
        brain = nodes.mask_array(brain_mask_node, volume_node)
        bundle = self.model(model)
        session = itermask.Session(bundle, image, affine, brain, policy=policy, seed=seed)
        self.reset()
        with nodes.scene_unchanged_on_failure(self.scene):
            self._create_outputs(volume_node, session)
        self.session, self.volume = session, volume_node
        params = self.parameter_node()
        for key, value in (("Model", bundle.name), ("Policy", policy), ("Seed", seed)):
            params.SetParameter(key, str(value))
        params.SetNodeReferenceID("InputVolume", volume_node.GetID())
        params.SetNodeReferenceID("BrainMask", brain_mask_node.GetID() if brain_mask_node else None)
        self._store_state()

    def _create_outputs(self, volume, session) -> None:
        name = volume.GetName()
        colors = self._mask_colors()
        mask = nodes.new_labelmap(self.scene, f"{name} IterMask mask", volume)
        preview = nodes.new_labelmap(self.scene, f"{name} IterMask segmentation preview", volume)
        anomaly = nodes.new_scalar_volume(self.scene, f"{name} IterMask anomaly map", volume)
        empty = np.zeros(session.prepared.input_shape, np.uint8)
        for node in (mask, preview):
            nodes.set_voxels(node, empty)
            node.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
        nodes.set_voxels(anomaly, empty.astype(np.float32))
        sequence = self.scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{name} IterMask iterations")
        sequence.SetIndexName("iteration")
        sequence.SetIndexType(sequence.NumericIndex)
        browser = self.scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{name} IterMask browser")
        browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
        self.outputs = {"mask": mask, "preview": preview, "anomaly_map": anomaly, "sequence": sequence,
                        "browser": browser, "plot": TauPlot(self.scene, name)}
        params = self.parameter_node()
        for role in ("mask", "preview", "anomaly_map", "sequence", "browser"):
            params.SetNodeReferenceID(role, self.outputs[role].GetID())
        params.SetNodeReferenceID("plot", self.outputs["plot"].chart.GetID())

    def _mask_colors(self):
        colors = self.scene.GetFirstNodeByName("IterMask colors")
        if colors is None:
            colors = self.scene.AddNewNodeByClass("vtkMRMLColorTableNode", "IterMask colors")
            colors.SetTypeToUser()
            colors.SetNumberOfColors(2)
            colors.SetColor(0, "background", 0, 0, 0, 0)
            colors.SetColor(1, "IterMask", *MASK_COLOR, 1.0)
        return colors

    def parameter_node(self):
        """The scene's IterMask parameter node (created on first use): settings and references to every output."""
        node = self.scene.GetFirstNodeByName(PARAMETER_NODE_NAME)
        if node is None or not node.IsA("vtkMRMLScriptedModuleNode"):
            node = self.scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", PARAMETER_NODE_NAME)
            node.SetAttribute("ModuleName", PARAMETER_NODE_NAME)
        return node

    def _require_session(self) -> itermask.Session:
        if self.session is None:
            raise ItermaskError("initialize a session first")
        return self.session

    def step(self) -> itermask.Iteration:
        """One iteration (cached if it was computed before), shown in the scene."""
        it = self._require_session().step()
        self.show()
        return it

    def back(self):
        self._require_session().back()
        self.show()

    def seek(self, index: int):
        """Show iteration ``index`` from the cache (no model call): the iteration slider."""
        self._require_session().seek(index)
        self.show()

    def set_tau(self, tau: float) -> None:
        """Shrink threshold for the next steps (later iterations are discarded)."""
        self._require_session().set_tau(tau)
        self._drop_iterations_after_current()
        self._store_state()

    def continue_from_segmentation(self, segmentation_node) -> None:
        """Use an edited segmentation (e.g. from the Segment Editor) as the mask for the next step."""
        session = self._require_session()
        session.set_mask(nodes.mask_array(segmentation_node, self.volume))
        self._drop_iterations_after_current()

    def run(self, progress=None, cancelled=lambda: False) -> bool:
        """Step to convergence; ``progress(iteration)`` after each step; ``cancelled()`` polled between steps.

        Returns True when converged. On cancel (False is returned) or failure (the error propagates) the session
        and the scene are put back as they were before the run.
        """
        session = self._require_session()
        checkpoint = self.checkpoint()
        try:
            while not session.converged:
                if cancelled():
                    raise RunCancelled
                self.step()
                if progress is not None:
                    progress(session.current)
        except BaseException as exc:
            self.restore(checkpoint)
            if isinstance(exc, RunCancelled):
                return False
            raise
        return True

    def checkpoint(self) -> tuple[int, int]:
        """Where the session stands (position, number of iterations), for :meth:`restore`."""
        return self.session.position, len(self.session.iterations)

    def restore(self, checkpoint: tuple[int, int]) -> None:
        """Undo the iterations computed since ``checkpoint``: session, caches, sequence and shown nodes."""
        position, count = checkpoint
        del self.session.iterations[count:]
        self.session.position = position
        self._drop_iterations_after_current()
        self.show()

    def reset(self) -> None:
        """Remove every output node of the current session (never the input or an applied segmentation)."""
        plot, browser = self.outputs.get("plot"), self.outputs.get("browser")
        proxy = browser.GetProxyNode(self.outputs["sequence"]) if browser else None
        nodes.remove_nodes(self.scene, [n for key, n in self.outputs.items() if key != "plot"]
                           + (plot.nodes() if plot else []) + [proxy])
        self.session, self.volume, self.outputs = None, None, {}
        self._masks.clear()
        self._maps.clear()

    # --- showing ----------------------------------------------------------------------------------------------
    def iteration_mask(self, index: int) -> np.ndarray:
        """Iteration ``index``'s mask on the input grid (i, j, k), cached as packed bits after the first call."""
        if index not in self._masks:
            mask = self.session.prepared.mask_to_input(self.session.iterations[index].mask)
            self._masks[index] = np.packbits(mask.ravel())
        shape = self.session.prepared.input_shape
        return np.unpackbits(self._masks[index], count=int(np.prod(shape))).reshape(shape).astype(bool)

    def anomaly_map(self, index: int | None = None) -> np.ndarray:
        """Iteration ``index``'s anomaly map on the input grid (the last few are kept for scrubbing)."""
        index = self.session.position if index is None else index
        if index in self._maps:
            self._maps.move_to_end(index)
        else:
            self._maps[index] = self.session.prepared.map_to_input(self.session.iterations[index].error)
            while len(self._maps) > self.anomaly_maps_kept:
                self._maps.popitem(last=False)
        return self._maps[index]

    def show(self) -> None:
        """Put the current iteration into the output nodes, the sequence and the plot."""
        session = self._require_session()
        self._sync_sequence()
        if session.current is None:
            return
        index = session.position
        nodes.set_voxels(self.outputs["mask"], self.iteration_mask(index).astype(np.uint8))
        nodes.set_voxels(self.outputs["anomaly_map"], self.anomaly_map(index))
        self._style_anomaly_map()
        self.preview_threshold()
        self.outputs["plot"].update(session)
        self.outputs["browser"].SetSelectedItemNumber(index)
        self._store_state()

    def preview_threshold(self, threshold: float | None = None) -> np.ndarray:
        """Segmentation preview = cached anomaly map > ``threshold`` inside the brain; returns the (i, j, k) mask.

        A given ``threshold`` is a person's choice and stays the session's; None previews the session's own (the
        policy's default, which for IterMask3D becomes τ_stop once the path has found it)."""
        session = self._require_session()
        if threshold is not None:
            session.threshold = float(threshold)
        preview = (self.anomaly_map() > session.threshold) & session.prepared.input_brain
        nodes.set_voxels(self.outputs["preview"], preview.astype(np.uint8))
        self.parameter_node().SetParameter("Threshold", repr(session.threshold))
        return preview

    def _style_anomaly_map(self) -> None:
        display = self.outputs["anomaly_map"].GetDisplayNode()
        heat = self.scene.GetFirstNodeByName("PET-Heat")
        if heat is not None:
            display.SetAndObserveColorNodeID(heat.GetID())
        # The window's top from the model-grid map: the same distribution, far fewer voxels than the input grid.
        session = self.session
        top = float(torch.quantile(session.current.error[session.prepared.brain], 0.999))
        low, high = session.tau, max(top, session.tau * 1.01)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(low, high)
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(low)  # errors below τ (confidently normal) are transparent

    def show_in_slice_views(self, show_anomaly_map: bool = False, opacity: float = 0.5) -> None:
        """Input as background, the mask as label layer, optionally the anomaly map as foreground, in every view."""
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            composite.SetBackgroundVolumeID(self.volume.GetID())
            composite.SetLabelVolumeID(self.outputs["mask"].GetID())
            composite.SetLabelOpacity(0.6)
            composite.SetForegroundVolumeID(self.outputs["anomaly_map"].GetID() if show_anomaly_map else None)
            composite.SetForegroundOpacity(opacity if show_anomaly_map else 0.0)

    def _sync_sequence(self) -> None:
        """One sequence item per computed iteration: add new ones, drop those a branch discarded."""
        sequence, session = self.outputs["sequence"], self.session
        for n in range(sequence.GetNumberOfDataNodes() - 1, -1, -1):
            if int(sequence.GetNthIndexValue(n)) >= len(session.iterations):
                sequence.RemoveDataNodeAtValue(sequence.GetNthIndexValue(n))
        for index in range(sequence.GetNumberOfDataNodes(), len(session.iterations)):
            snapshot = slicer.vtkMRMLLabelMapVolumeNode()
            snapshot.CopyOrientation(self.volume)
            nodes.set_voxels(snapshot, self.iteration_mask(index).astype(np.uint8))
            sequence.SetDataNodeAtValue(snapshot, str(index))
        browser = self.outputs["browser"]
        if sequence.GetNumberOfDataNodes() and browser.GetProxyNode(sequence) is None:
            _sequences_logic().UpdateProxyNodesFromSequences(browser)  # the node the sequence browser plays into

    def _drop_iterations_after_current(self) -> None:
        keep = len(self.session.iterations)
        for cache in (self._masks, self._maps):
            for index in [i for i in cache if i >= keep]:
                del cache[index]
        self._sync_sequence()

    def _store_state(self) -> None:
        params, session = self.parameter_node(), self.session
        params.SetParameter("Tau", repr(session.tau))
        params.SetParameter("Threshold", repr(session.threshold))
        params.SetParameter("Iteration", str(session.position))
        params.SetParameter("Iterations", str(len(session.iterations)))

    # --- result -----------------------------------------------------------------------------------------------
    def apply(self, segment_name: str = "Anomaly", source: str = "segmentation"):
        """A new segmentation node with one named segment: the thresholded anomaly map (``segmentation``) or the
        current iteration's mask (``mask``), ready for the Segment Editor and export."""
        session = self._require_session()
        if session.current is None:
            raise ItermaskError("run at least one step before applying")
        if source not in ("segmentation", "mask"):
            raise ItermaskError(f"unknown result source {source!r}")
        mask = self.preview_threshold() if source == "segmentation" else \
            self.iteration_mask(session.position)
        node = nodes.segmentation_from_mask(self.scene, mask, self.volume, f"{self.volume.GetName()} IterMask",
                                            segment_name, MASK_COLOR)
        self.parameter_node().SetNodeReferenceID("Result", node.GetID())
        return node
