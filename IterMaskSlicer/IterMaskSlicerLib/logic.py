"""IterMask on MRML nodes: one interactive session per input volume, run by the worker process, shown in the scene.

Three parts, each in its own module: :class:`.driver.SessionDriver` sends commands to the worker and ends each one
(a cancelled or failed command, or a dead worker, rolls back); :class:`.caches.InputGridCache` keeps the session's
masks and anomaly map on the input grid; :class:`.outputs.OutputNodes` shows them. This class joins them and offers
what the module's buttons and scripts call. The input volume is never modified.

Two ways to drive it: ``begin(...)`` then ``poll()`` until it returns the final reply (what :class:`.workflow.Workflow`
does for the module's buttons, from a timer: each poll does a short slice of work and never waits), or the plain
methods (``initialize``, ``step``, ``run``, …) that wait (scripts, the Python console, tests). No Qt, no torch.
"""
from __future__ import annotations

import math
import time

import numpy as np
import slicer

from itermask.discovery import available_models, default_model_name, read_metadata, validated_default
from itermask.errors import ItermaskError

from . import nodes
from .caches import InputGridCache
from .client import WorkerClient
from .driver import SessionDriver
from .outputs import RESULT_COLOR, OutputNodes
from .parameters import Parameters

SOURCES = ("thresholded", "mask")  # Apply exports the thresholded anomaly map or the current iteration's mask
# The module has no sequence selector: it offers the FLAIR default the CLI's ``--modality FLAIR`` uses (defaults.json).
DEFAULT_MODALITY = "FLAIR"
# The longest a poll keeps the UI thread (seconds) before leaving the rest of a reply to the next poll; one piece
# of work (a volume into a node) takes about 10–30 ms, and the widget polls every 30 ms.
POLL_SLICE = 0.02


def default_model() -> str:
    """The bundle the validation chose for :data:`DEFAULT_MODALITY`, as ``itermask segment`` picks it."""
    return default_model_name(DEFAULT_MODALITY)


def model_file(name_or_path=None) -> str:
    """A bundled model's file, or the given path (None: :func:`default_model`)."""
    name_or_path = name_or_path or default_model()
    return str(available_models().get(str(name_or_path), name_or_path))


def model_note(name_or_path=None) -> str:
    """One line on what the validation says of a model for its sequence, for a person choosing it (no torch):
    whether it is the sequence's validated default, or that the sequence has none (and what the best model gave).

    >>> model_note("flair-3d")                                                              # doctest: +SKIP
    'flair-3d: the validated default for FLAIR (validation Dice 0.68)'
    """
    metadata = read_metadata(model_file(name_or_path))
    chosen, line = validated_default(metadata.modality)
    if chosen is None or chosen == metadata.name:
        return line
    return f"{metadata.name}: not the validated default for {metadata.modality} (that is {chosen})"


def default_policy(name_or_path) -> str:
    """The policy a bundle recommends (its ``metadata.policy.default``), read without torch."""
    return read_metadata(model_file(name_or_path)).policy.default


class IterMaskLogic:
    """Interactive IterMask on a scene.

    Args:
        scene: the MRML scene (default ``slicer.mrmlScene``).
        worker: the worker client (default: a :class:`WorkerClient`: PythonSlicer when on PATH, else this Python).

    Typical use (what the module's buttons call, each also as ``begin(command)`` + ``poll()``)::

        logic.initialize(volume, brain_mask_node)     # the FLAIR default model and its policy
        logic.step(); logic.back(); logic.seek(2); logic.set_tau(0.5); logic.step()
        logic.run()
        logic.preview_threshold(3.0)
        segmentation = logic.apply("Lesion")
    """

    def __init__(self, scene=None, worker: WorkerClient | None = None):
        self.scene = scene if scene is not None else slicer.mrmlScene
        self.driver = SessionDriver(worker if worker is not None else WorkerClient(), on_roll_back=self._show_numbers)
        self.parameters = Parameters(self.scene)
        self.model_info: dict = {}
        self.volume = None
        self.outputs: OutputNodes | None = None
        self.cache: InputGridCache | None = None
        self._preview: np.ndarray | None = None  # (k, j, i): the mask the preview segmentation shows
        self._showing = None  # the rest of a reply still to show (a generator), and the reply
        self._final: dict | None = None
        self.example_nodes: tuple = ()

    # --- the command in flight --------------------------------------------------------------------------------
    @property
    def worker(self) -> WorkerClient:
        return self.driver.worker

    @property
    def state(self) -> dict | None:
        """The session as the worker last reported it (None: no session)."""
        return self.driver.state

    @property
    def busy(self) -> bool:
        """A command is in flight or its reply is still being shown: nothing that changes the session may start."""
        return self.driver.busy or self._showing is not None

    @property
    def ready(self) -> bool:
        """A session is open in the worker."""
        return self.driver.ready

    def begin(self, command: str, context: dict | None = None, **arguments) -> int:
        """Send a command; the scene changes as :meth:`poll` receives its replies."""
        if self._showing is not None:
            raise ItermaskError("wait until the current step has finished (or cancel it)")
        return self.driver.send(command, context, **arguments).id

    def cancel(self) -> None:
        """Stop a run after the step in flight; :meth:`poll` then shows the scene as before the run."""
        self.driver.cancel()

    def poll(self, budget: float = POLL_SLICE) -> dict | None:
        """Show what has arrived, for about ``budget`` seconds or until the views have their new content (the
        caller draws them then); returns the final reply once the command is over and all of it is shown, else None.
        A cancelled or failed run, or a worker that died, leaves session and scene as they were before the command
        (the failure is raised)."""
        deadline = time.perf_counter() + budget
        if self._showing is None:
            request = self.driver.request
            replies, final = self.driver.receive()
            if final is not None and final["event"] != "done":
                return final
            if not replies:
                return None
            self._showing, self._final = self._show_replies(replies, request), final
        try:
            for views_done in self._showing:
                if views_done or time.perf_counter() > deadline:
                    return None
        except Exception:
            self._showing = None  # a reply that cannot be shown must not keep the module busy
            raise
        final, self._showing, self._final = self._final, None, None
        return final

    def wait(self, progress=None, interval: float = 0.005) -> dict:
        """Poll until the command in flight is over; ``progress(state)`` whenever something new was shown."""
        shown = self.state
        while (final := self.poll(budget=math.inf)) is None:
            if progress is not None and self.state is not shown:
                shown = self.state
                progress(shown)
            time.sleep(interval)
        return final

    def _show_replies(self, replies: list[dict], request):
        """Show replies, a piece of work per ``yield``: a run's progress as numbers, a finished command's arrays.
        What the views show comes first (mask, map, preview), the iterations' history (the sequence) after it; the
        ``yield True`` between them ends the poll."""
        last = replies[-1]
        if request.command == "example":
            self._add_example(last)
            return
        if request.command == "initialize":
            self._open(last, **request.context)
        arrays = last["arrays"]
        if "masks" in arrays:
            self.cache.add_masks(last["first_mask"], arrays["masks"])
        if "map" in arrays:
            self.cache.set_map(arrays["map"], last["map_high"])
        self._show_numbers(self.state)
        shows_iteration = last["event"] == "done" and request.command != "threshold"
        if shows_iteration:
            self.cache.forget_from(self.state["count"])
            yield from self._show_voxels(new_map="map" in arrays)
        if "segmentation" in arrays:
            self._show_preview(arrays["segmentation"])
        if shows_iteration:
            yield True  # the views have their new content: the poll ends here, so they are drawn before the history
            yield from self.outputs.sync_sequence(self.state["count"], self.state["position"], self.cache)

    def _show_numbers(self, state: dict | None) -> None:
        """What every reply changes: the plot and the parameter node (also what a rolled-back command restores)."""
        if state is not None and self.outputs is not None:
            self.outputs.show_plot(state["plot"])
            self.parameters.record_state(state)
            if self.cache.map_values is not None:
                self.outputs.style_map(self.cache, state["tau"])

    def _show_voxels(self, new_map: bool):
        if self.state["position"] < 0:
            return
        self.outputs.show_mask(self.cache, self.state["position"])
        yield
        if new_map:
            self.outputs.show_map(self.cache)
            yield

    def _show_preview(self, packed: np.ndarray) -> None:
        """The worker's segmentation of the shown map (packed bits at the brain's voxels) as the preview."""
        self._preview = self.cache.volume(np.unpackbits(packed, count=self.cache.voxels).astype(bool))
        self.outputs.show_preview(self._preview)
        self.parameters.record_threshold(self.threshold)

    # --- one call for scripts ---------------------------------------------------------------------------------
    def segment(self, volume_node, brain_mask_node=None, model=None, policy=None, seed=0,
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
        image, brain, affine = reply["arrays"]["image"], reply["arrays"]["brain"], np.asarray(reply["affine"])
        volume = slicer.util.addVolumeFromArray(image.transpose(2, 1, 0).copy(), affine, "IterMask example FLAIR")
        mask = slicer.util.addVolumeFromArray(brain.transpose(2, 1, 0).copy(), affine, "IterMask example brain mask",
                                              nodeClassName="vtkMRMLLabelMapVolumeNode")
        self.example_nodes = volume, mask

    # --- interactive session ----------------------------------------------------------------------------------
    def begin_initialize(self, volume_node, brain_mask_node=None, model=None, policy=None, seed=0,
                         device: str = "auto") -> int:
        """Open a session on ``volume_node`` in the worker (``policy`` None: the bundle's own default); the output
        nodes are created when it answers; the first step is not run yet."""
        image, affine = nodes.volume_arrays(volume_node)
        brain = nodes.mask_array(brain_mask_node, volume_node)
        model = model or default_model()
        policy = policy or default_policy(model)
        arguments = {"image": self.worker.put_array("image", image), "affine": affine.tolist(),
                     "brain": None if brain is None else self.worker.put_array("brain", brain.astype(np.uint8)),
                     "model": model_file(model), "policy": policy, "seed": int(seed), "device": device}
        context = {"volume": volume_node, "brain_mask": brain_mask_node, "model": str(model), "policy": policy,
                   "seed": int(seed)}
        return self.begin("initialize", context, **arguments)

    def initialize(self, volume_node, brain_mask_node=None, model=None, policy=None, seed=0) -> None:
        self.begin_initialize(volume_node, brain_mask_node, model, policy, seed)
        self.wait()

    def _open(self, reply: dict, volume, brain_mask, model: str, policy: str, seed: int) -> None:
        self._remove_outputs()
        self.model_info = reply["model"]
        self.cache = InputGridCache(reply["arrays"]["brain"])
        with nodes.scene_unchanged_on_failure(self.scene):
            self.outputs = OutputNodes(self.scene, volume)
        self.volume = volume
        self.parameters.record_settings(model, policy, seed, volume, brain_mask)
        self.parameters.record_outputs(self.outputs.roles())

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
        """Remove every output node of the current session (never the input or an applied segmentation) and forget
        the session."""
        self._remove_outputs()
        self.driver.state = None

    def _remove_outputs(self) -> None:
        if self.outputs is not None:
            self.outputs.remove()
        self.volume, self.outputs, self.cache, self._preview = None, None, None, None

    def close(self) -> None:
        """Remove the outputs and stop the worker (the module is being closed)."""
        self._remove_outputs()
        self._showing = self._final = None
        self.driver.stop()

    def parameter_node(self):
        """The module's parameter node (see :mod:`.parameters`)."""
        return self.parameters.node

    # --- what is shown ----------------------------------------------------------------------------------------
    def iteration_mask(self, index: int) -> np.ndarray:
        """Iteration ``index``'s mask on the input grid (i, j, k)."""
        return self.cache.mask(index).T

    def anomaly_map(self) -> np.ndarray:
        """The shown iteration's anomaly map on the input grid (i, j, k) float32, zero outside the brain."""
        if self.cache is None:
            raise ItermaskError("no iteration has been run yet")
        return self.cache.anomaly_map().T

    @property
    def preview(self) -> np.ndarray | None:
        """The (i, j, k) mask the preview segmentation shows (None before the first step)."""
        return None if self._preview is None else self._preview.T

    @property
    def threshold(self) -> float:
        """The segmentation threshold: a person's choice if made, else the bundle's rule's or the policy's
        (IterMask3D: τ_stop), as the worker's session holds it."""
        return self.state["threshold"]

    def preview_threshold(self, threshold: float) -> np.ndarray:
        """Segmentation preview at ``threshold`` (a person's choice: it stays for later iterations): the shown map
        above it inside the brain, cleaned up by the bundle's rule, as ``itermask segment`` makes its mask. The worker
        thresholds and cleans (the map's median and rim are done once per map, so this costs the comparison and the
        clusters); this waits for it. Returns the (i, j, k) mask."""
        if self.cache is None or self.cache.map_values is None:
            raise ItermaskError("no iteration has been run yet")
        self.begin("threshold", threshold=float(threshold))
        self.wait()
        return self.preview

    def show_in_slice_views(self, show_anomaly_map: bool = False, opacity: float = 0.5) -> None:
        self.outputs.show_in_slice_views(show_anomaly_map, opacity)

    # --- result -----------------------------------------------------------------------------------------------
    def apply(self, segment_name: str = "Anomaly", source: str = "thresholded"):
        """A new segmentation node with one named lesion segment: exactly the preview shown (``thresholded``: the
        anomaly map above the threshold, cleaned up as the bundle's rule says) or the current iteration's mask
        (``mask``), for the Segment Editor."""
        if not self.ready or self.state["position"] < 0:
            raise ItermaskError("run at least one step before applying")
        if source not in SOURCES:
            raise ItermaskError(f"unknown result source {source!r} (choose from {', '.join(SOURCES)})")
        mask = self.preview if source == "thresholded" else self.iteration_mask(self.state["position"])
        node = nodes.segmentation_from_mask(self.scene, mask, self.volume, f"{self.volume.GetName()} IterMask",
                                            segment_name, RESULT_COLOR)
        self.parameters.record_result(node)
        return node
