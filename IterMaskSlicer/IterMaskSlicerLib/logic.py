"""IterMask on MRML nodes: one interactive session per input volume, shown as labelmaps, a sequence and a plot.

The session itself lives in the worker process (:mod:`.worker`); this class sends it commands through a
:class:`.client.WorkerClient` and puts each reply into the scene. Everything a user sees lives in the scene: the
current iteration's mask (label layer, filled), the segmentation preview (a segmentation outlined in its own colour:
exactly what Apply exports), the anomaly map (optional foreground), every iteration as a Sequence item, τ(t) in a
plot chart, and the settings in the module's parameter node. The input volume is never modified.

Two ways to drive it: ``begin(...)`` then ``poll()`` until it returns the final reply (the widget, from a QTimer,
never blocking), or the plain methods (``initialize``, ``step``, ``run``, …) that wait (scripts, tests). No Qt, no
torch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import slicer

from itermask.discovery import available_models, read_metadata
from itermask.errors import ItermaskError

from . import nodes
from .client import WorkerClient, WorkerDied
from .plots import TauPlot

MODULE_NAME = "IterMaskSlicer"  # the parameter node's singleton tag, as Slicer's ScriptedLoadableModuleLogic uses
MASK_COLOR = (1.0, 0.55, 0.0)     # the iteration mask: filled label layer
PREVIEW_COLOR = (0.2, 0.9, 1.0)   # the thresholded map (what Apply makes): outline
SOURCES = ("thresholded", "mask")  # Apply exports the thresholded anomaly map or the current iteration's mask
DEFAULT_MODEL = "flair-2d"


def _sequences_logic():
    return slicer.modules.sequences.logic()


def model_file(name_or_path) -> str:
    """A bundled model's file, or the given path."""
    return str(available_models().get(str(name_or_path), name_or_path))


def default_policy(name_or_path) -> str:
    """The policy a bundle recommends (its ``metadata["policy"]["default"]``), read without torch."""
    return read_metadata(model_file(name_or_path))["policy"].get("default", "itermask2")


@dataclass
class _Request:
    """The command in flight: its id, name, what the scene looked like before it, and what to do with the reply."""

    id: int
    command: str
    before: dict
    context: dict = field(default_factory=dict)


class IterMaskLogic:
    """Interactive IterMask on a scene.

    Args:
        scene: the MRML scene (default ``slicer.mrmlScene``).
        worker: the worker client (default: a :class:`WorkerClient` on ``sys.executable``, i.e. PythonSlicer).

    Typical use (what the module's buttons call, each also as ``begin(command)`` + ``poll()``)::

        logic.initialize(volume, brain_mask_node, model="flair-2d", policy="itermask2")
        logic.step(); logic.back(); logic.seek(2); logic.set_tau(0.5); logic.step()
        logic.run()
        logic.preview_threshold(3.0)
        segmentation = logic.apply("Lesion")
    """

    def __init__(self, scene=None, worker: WorkerClient | None = None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.worker = worker if worker is not None else WorkerClient()
        self.state: dict | None = None   # the session as the worker last reported it; None: no session
        self.model_info: dict = {}
        self.volume = None
        self.outputs: dict[str, object] = {}
        self.preview: np.ndarray | None = None   # the (i, j, k) mask the preview segmentation shows
        self.threshold_from_user: float | None = None
        self._masks: dict[int, np.ndarray] = {}  # iteration → packed bits of its mask on the input grid
        self._map: np.ndarray | None = None      # the current iteration's anomaly map on the input grid
        self._brain: np.ndarray | None = None
        self._request: _Request | None = None
        self.example_nodes: tuple = ()

    # --- the command in flight --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A command is in flight: nothing that changes the session may be sent until :meth:`poll` finishes it."""
        return self._request is not None

    @property
    def ready(self) -> bool:
        """A session is open in the worker."""
        return self.state is not None

    def begin(self, command: str, context: dict | None = None, **arguments) -> int:
        """Send a command; the scene changes as :meth:`poll` receives its replies."""
        if self.busy:
            raise ItermaskError("wait until the current step has finished (or cancel it)")
        if command not in ("initialize", "example") and not self.ready:
            raise ItermaskError("initialize a session first")
        before = {"state": self.state, "map": self._map, "nodes": nodes.node_ids(self.scene)}
        self._request = _Request(self.worker.send(command, **arguments), command, before, context or {})
        return self._request.id

    def cancel(self) -> None:
        """Ask a run to stop after the step in flight; :meth:`poll` then puts the scene back as before the run."""
        if self.busy and self._request.command == "run":
            self.worker.send("cancel")

    def poll(self) -> dict | None:
        """Show what has arrived; returns the final reply once the command is over, else None.

        A cancelled or failed run, or a worker that died, leaves session and scene as they were before the command
        (the failure is raised; after a death the session is gone and the next command starts a new worker)."""
        request = self._request
        if request is None:
            return None
        try:
            messages = [m for m in self.worker.messages() if m.get("id") == request.id]
        except WorkerDied:
            self._request = None
            self._restore(request.before)
            self.state = None
            raise
        final = next((m for m in messages if m["event"] != "progress"), None)
        shown = [m for m in messages if m["event"] in ("progress", "done")]
        if shown:
            self._receive(shown, request)
        if final is None:
            return None
        self._request = None
        if final["event"] in ("cancelled", "error"):
            for path in final["arrays"].values():  # the worker's copy of the state we restore ourselves
                self.worker.take_array(path)
            self._restore(request.before)
        if final["event"] == "error":
            raise ItermaskError(final["message"])
        return final

    def wait(self, progress=None, interval: float = 0.005) -> dict:
        """Poll until the command in flight is over; ``progress(state)`` whenever something new was shown."""
        shown = self.state
        while (final := self.poll()) is None:
            if progress is not None and self.state is not shown:
                shown = self.state
                progress(shown)
            time.sleep(interval)
        return final

    def _receive(self, messages: list[dict], request: _Request) -> None:
        """Take the arrays and the newest state of ``messages`` and show them."""
        if request.command == "example":
            self._add_example(messages[-1])
            return
        if request.command == "initialize":
            self._open(messages[-1], **request.context)
        for message in messages:
            self.state = message["state"]
            arrays = message["arrays"]
            if "mask" in arrays:
                mask = self.worker.take_array(arrays["mask"]).astype(bool)
                self._masks[self.state["position"]] = np.packbits(mask.ravel())
            if "map" in arrays:
                self._map = self.worker.take_array(arrays["map"])
        self.show()

    def _restore(self, before: dict) -> None:
        """Put state and scene back as ``before`` (the session's iterations, shown nodes, any node added since)."""
        if before["state"] is None or not self.outputs:
            return
        self.state, self._map = before["state"], before["map"]
        self.show()
        nodes.remove_added_since(self.scene, before["nodes"])

    # --- one call for scripts ---------------------------------------------------------------------------------
    def segment(self, volume_node, brain_mask_node=None, model=DEFAULT_MODEL, policy=None, seed=0,
                segment_name="Anomaly"):
        """Segment a volume node to convergence and return a new segmentation node (the interactive outputs are
        removed again; no other node stays).

        >>> seg = slicer.util.getModuleLogic("IterMaskSlicer").segment(getNode("FLAIR"))   # doctest: +SKIP
        """
        self.initialize(volume_node, brain_mask_node, model=model, policy=policy, seed=seed)
        self.run()
        segmentation = self.apply(segment_name)
        self.reset()
        return segmentation

    # --- the example scan -------------------------------------------------------------------------------------
    def load_example(self) -> tuple:
        """Put the built-in example FLAIR and its brain mask (those of ``itermask demo``) in the scene."""
        self.begin("example")
        self.wait()
        return self.example_nodes

    def _add_example(self, reply: dict) -> None:
        image, brain = (self.worker.take_array(reply["arrays"][k]) for k in ("image", "brain"))
        affine = np.asarray(reply["affine"])
        volume = slicer.util.addVolumeFromArray(image.transpose(2, 1, 0).copy(), affine, "IterMask example FLAIR")
        mask = slicer.util.addVolumeFromArray(brain.transpose(2, 1, 0).copy(), affine, "IterMask example brain mask",
                                              nodeClassName="vtkMRMLLabelMapVolumeNode")
        self.example_nodes = volume, mask

    # --- interactive session ----------------------------------------------------------------------------------
    def begin_initialize(self, volume_node, brain_mask_node=None, model=DEFAULT_MODEL, policy=None, seed=0) -> int:
        """Open a session on ``volume_node`` in the worker (``policy`` None: the bundle's own default); the output
        nodes are created when it answers; the first step is not run yet."""
        image, affine = nodes.volume_arrays(volume_node)
        brain = nodes.mask_array(brain_mask_node, volume_node)
        policy = policy or default_policy(model)
        arguments = {"image": self.worker.put_array("image", image), "affine": affine.tolist(),
                     "brain": None if brain is None else self.worker.put_array("brain", brain.astype(np.uint8)),
                     "model": model_file(model), "policy": policy, "seed": int(seed)}
        context = {"volume": volume_node, "brain_mask": brain_mask_node, "policy": policy, "seed": int(seed)}
        return self.begin("initialize", context, **arguments)

    def initialize(self, volume_node, brain_mask_node=None, model=DEFAULT_MODEL, policy=None, seed=0) -> None:
        self.begin_initialize(volume_node, brain_mask_node, model, policy, seed)
        self.wait()

    def _open(self, reply: dict, volume, brain_mask, policy: str, seed: int) -> None:
        self.reset()
        self.model_info = reply["model"]
        self._brain = self.worker.take_array(reply["arrays"].pop("brain")).astype(bool)
        with nodes.scene_unchanged_on_failure(self.scene):
            self._create_outputs(volume)
        self.volume = volume
        params = self.parameter_node()
        for key, value in (("model", self.model_info["name"]), ("policy", policy), ("seed", seed)):
            params.SetParameter(key, str(value))
        for key, node in (("inputVolume", volume), ("brainMask", brain_mask)):
            params.SetParameter(key, "")  # how parameterNodeWrapper stores a node: empty value plus a reference
            params.SetNodeReferenceID(key, node.GetID() if node else None)

    def step(self) -> None:
        """One iteration (cached if it was computed before), shown in the scene."""
        self.begin("step")
        self.wait()

    def back(self) -> None:
        self.begin("back")
        self.wait()

    def seek(self, index: int) -> None:
        """Show iteration ``index`` (computed before; the worker sends its anomaly map): the iteration slider."""
        self.begin("seek", index=int(index))
        self.wait()

    def set_tau(self, tau: float) -> None:
        """Shrink threshold for the next steps (later iterations are discarded)."""
        self.begin("set_tau", tau=float(tau))
        self.wait()

    def begin_continue_from_segmentation(self, segmentation_node) -> int:
        """Use an edited segmentation (e.g. from the Segment Editor) as the mask for the next step."""
        if not self.ready:
            raise ItermaskError("initialize a session first")
        mask = nodes.mask_array(segmentation_node, self.volume)
        return self.begin("set_mask", mask=self.worker.put_array("mask", mask.astype(np.uint8)))

    def continue_from_segmentation(self, segmentation_node) -> None:
        self.begin_continue_from_segmentation(segmentation_node)
        self.wait()

    def run(self, max_steps: int | None = None, progress=None) -> bool:
        """Step to convergence (or ``max_steps`` steps); True when converged. A failure is raised and leaves
        session and scene as before the run."""
        self.begin("run", max_steps=max_steps)
        return self.wait(progress)["event"] == "done" and self.state["converged"]

    def reset(self) -> None:
        """Remove every output node of the current session (never the input or an applied segmentation)."""
        plot, browser = self.outputs.get("plot"), self.outputs.get("browser")
        proxy = browser.GetProxyNode(self.outputs["sequence"]) if browser else None
        nodes.remove_nodes(self.scene, [n for key, n in self.outputs.items() if key != "plot"]
                           + (plot.nodes() if plot else []) + [proxy])
        self.state, self.volume, self.outputs, self.preview = None, None, {}, None
        self.threshold_from_user, self._map = None, None
        self._masks.clear()

    def close(self) -> None:
        """Remove the outputs and stop the worker (the module is being closed)."""
        self.reset()
        self._request = None
        self.worker.stop()

    # --- outputs ----------------------------------------------------------------------------------------------
    def _create_outputs(self, volume) -> None:
        name = volume.GetName()
        mask = nodes.new_labelmap(self.scene, f"{name} IterMask mask", volume)
        anomaly = nodes.new_scalar_volume(self.scene, f"{name} IterMask anomaly map", volume)
        nodes.set_voxels(mask, np.zeros(self._brain.shape, np.uint8))
        mask.GetDisplayNode().SetAndObserveColorNodeID(self._mask_colors().GetID())
        nodes.set_voxels(anomaly, np.zeros(self._brain.shape, np.float32))
        preview = nodes.new_segmentation(self.scene, f"{name} IterMask preview", volume, "Preview", PREVIEW_COLOR)
        display = preview.GetDisplayNode()
        display.SetVisibility2DFill(False)   # an outline, so the filled iteration mask stays visible beneath it
        display.SetVisibility2DOutline(True)
        display.SetSliceIntersectionThickness(2)
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
        """The module's parameter node (created on first use): the singleton ScriptedLoadableModuleLogic and the
        widget's parameterNodeWrapper use, holding the settings and references to every output."""
        node = self.scene.GetSingletonNode(MODULE_NAME, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = self.scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
            node.UnRegister(None)  # CreateNodeByClass hands over a reference the scene takes itself
            node.SetSingletonTag(MODULE_NAME)
            node.SetName(MODULE_NAME)
            node.SetAttribute("ModuleName", MODULE_NAME)
            node = self.scene.AddNode(node)
        return node

    # --- showing ----------------------------------------------------------------------------------------------
    def iteration_mask(self, index: int) -> np.ndarray:
        """Iteration ``index``'s mask on the input grid (i, j, k)."""
        shape = self._brain.shape
        return np.unpackbits(self._masks[index], count=int(np.prod(shape))).reshape(shape).astype(bool)

    def anomaly_map(self) -> np.ndarray:
        """The shown iteration's anomaly map on the input grid (float32, zero outside the brain)."""
        if self._map is None:
            raise ItermaskError("no iteration has been run yet")
        return self._map

    @property
    def threshold(self) -> float:
        """The segmentation threshold: a person's choice if made, else the policy's (IterMask3D: τ_stop)."""
        return self.threshold_from_user if self.threshold_from_user is not None else self.state["threshold"]

    def show(self) -> None:
        """Put the current iteration into the output nodes, the sequence and the plot."""
        state = self.state
        self._sync_sequence()
        self.outputs["plot"].update_columns({k: np.asarray(v, float) for k, v in state["plot"].items()})
        self._store_state()
        if state["position"] < 0:
            return
        nodes.set_voxels(self.outputs["mask"], self.iteration_mask(state["position"]).astype(np.uint8))
        self.outputs["browser"].SetSelectedItemNumber(state["position"])
        if self._map is not None:
            nodes.set_voxels(self.outputs["anomaly_map"], self._map)
            self._style_anomaly_map()
            self.preview_threshold()

    def preview_threshold(self, threshold: float | None = None) -> np.ndarray:
        """Segmentation preview = anomaly map > ``threshold`` inside the brain, shown as the preview segmentation;
        returns the (i, j, k) mask. A given ``threshold`` is a person's choice and stays; None shows the current."""
        if threshold is not None:
            self.threshold_from_user = float(threshold)
        self.preview = (self.anomaly_map() > self.threshold) & self._brain
        nodes.set_segment_voxels(self.outputs["preview"], self.preview, self.volume)
        self.parameter_node().SetParameter("threshold", str(self.threshold))
        return self.preview

    def _style_anomaly_map(self) -> None:
        display = self.outputs["anomaly_map"].GetDisplayNode()
        heat = self.scene.GetFirstNodeByName("PET-Heat")
        if heat is not None:
            display.SetAndObserveColorNodeID(heat.GetID())
        inside = self._map[self._brain]
        low = self.state["tau"]
        high = max(float(np.quantile(inside, 0.999)) if inside.size else low, low * 1.01)
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(low, high)
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(low)  # errors below τ (confidently normal) are transparent

    def show_in_slice_views(self, show_anomaly_map: bool = False, opacity: float = 0.5) -> None:
        """Input as background, the mask as label layer (filled), optionally the anomaly map as foreground, in every
        view; the preview segmentation draws its outline on top by itself."""
        for i in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = self.scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            composite.SetBackgroundVolumeID(self.volume.GetID())
            composite.SetLabelVolumeID(self.outputs["mask"].GetID())
            composite.SetLabelOpacity(0.4)
            composite.SetForegroundVolumeID(self.outputs["anomaly_map"].GetID() if show_anomaly_map else None)
            composite.SetForegroundOpacity(opacity if show_anomaly_map else 0.0)

    def _sync_sequence(self) -> None:
        """One sequence item per computed iteration: add new ones, drop those a branch or an undo discarded."""
        sequence, count = self.outputs["sequence"], self.state["count"]
        for index in [i for i in self._masks if i >= count]:
            del self._masks[index]
        for n in range(sequence.GetNumberOfDataNodes() - 1, -1, -1):
            if int(sequence.GetNthIndexValue(n)) >= count:
                sequence.RemoveDataNodeAtValue(sequence.GetNthIndexValue(n))
        for index in range(sequence.GetNumberOfDataNodes(), count):
            snapshot = slicer.vtkMRMLLabelMapVolumeNode()
            snapshot.CopyOrientation(self.volume)
            nodes.set_voxels(snapshot, self.iteration_mask(index).astype(np.uint8))
            sequence.SetDataNodeAtValue(snapshot, str(index))
        browser = self.outputs["browser"]
        if sequence.GetNumberOfDataNodes() and browser.GetProxyNode(sequence) is None:
            _sequences_logic().UpdateProxyNodesFromSequences(browser)  # the node the sequence browser plays into

    def _store_state(self) -> None:
        params, state = self.parameter_node(), self.state
        params.SetParameter("tau", str(state["tau"]))
        params.SetParameter("iteration", str(state["position"]))
        params.SetParameter("iterations", str(state["count"]))

    # --- result -----------------------------------------------------------------------------------------------
    def apply(self, segment_name: str = "Anomaly", source: str = "thresholded"):
        """A new segmentation node with one named lesion segment: exactly the preview shown (``thresholded``: the
        anomaly map above the threshold) or the current iteration's mask (``mask``), for the Segment Editor."""
        if not self.ready or self.state["position"] < 0:
            raise ItermaskError("run at least one step before applying")
        if source not in SOURCES:
            raise ItermaskError(f"unknown result source {source!r} (choose from {', '.join(SOURCES)})")
        mask = self.preview if source == "thresholded" else self.iteration_mask(self.state["position"])
        node = nodes.segmentation_from_mask(self.scene, mask, self.volume, f"{self.volume.GetName()} IterMask",
                                            segment_name, MASK_COLOR)
        self.parameter_node().SetNodeReferenceID("result", node.GetID())
        return node
