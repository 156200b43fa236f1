"""The IterMask page: the Slicer module's workflow on trame-slicer's MRML scene, slice views and segment editor.

What the page does with a session is the module's own: :class:`IterMaskSlicerLib.workflow.Workflow` on an
:class:`IterMaskSlicerLib.logic.IterMaskLogic` (same output nodes, same worker process), and the panel's numbers and
words from :mod:`IterMaskSlicerLib.panel`. This file only joins them to trame: state in, state out, a polling task
while an action runs (the desktop's QTimer), uploads, downloads and the segment editor's paint and erase.
"""
from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import slicer
from trame.app import TrameApp
from trame_server.utils.asynchronous import create_task
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.core.volume_window_level import VolumeWindowLevel
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import SegmentationEffectErase, SegmentationEffectNoTool, SegmentationEffectPaint
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition
from undo_stack import UndoStack
from vtkmodules.vtkCommonCore import vtkCommand

from itermask.discovery import available_models
from itermask.errors import ItermaskError
from IterMaskSlicerLib import panel
from IterMaskSlicerLib.client import WorkerClient
from IterMaskSlicerLib.logic import IterMaskLogic, default_model, default_policy
from IterMaskSlicerLib.standalone import install_globals
from IterMaskSlicerLib.workflow import Workflow

from . import dicom, files, tabs
from .plot import tau_plot_svg
from .ui import build_page

# While the worker computes, the server sleeps until the worker writes a line (a desktop-like 5 ms polling timer
# would take CPU from the worker on a small machine); at most this many seconds, in case a line is missed.
WAIT_S = 0.5
# A Run's progress is shown at most this often (seconds): every showing (plot, panel, the page's update) takes CPU
# from the run on a small machine, and a person reads a few updates a second.
PROGRESS_INTERVAL_S = 0.25
# Seconds of showing per poll. Each poll's changes to the scene are rendered once, after it (a render of a large
# slice view takes 50-150 ms on a CPU), so a poll shows a whole reply (tens of ms for a step) rather than the
# desktop's 20 ms slices, which cost a render each; a long Run's sequence items still spread over several polls.
POLL_BUDGET = 0.25
# The views' image stream: each change rendered and sent once, at full quality, whether or not the mouse is over the
# view. trame-slicer's default renders every change twice (a rough JPEG at once, a sharp one 0.5 s later) and a view
# without the mouse at 10 frames per second, but the page's views change when a panel control is used.
STREAM = {"interactive_quality": 90, "blur_fps": None}  # 90: the quality of trame-rca's sharp frame
EFFECTS = {"paint": SegmentationEffectPaint, "erase": SegmentationEffectErase, "none": SegmentationEffectNoTool}


def layouts() -> dict[str, Layout]:
    """The page's view layouts: the axial view alone, axial primary (coronal and sagittal beside it), three views."""
    def axial():
        return ViewLayoutDefinition.axial_view()

    def others():
        return [ViewLayoutDefinition.coronal_view(), ViewLayoutDefinition.sagittal_view()]

    return {"Axial": Layout(LayoutDirection.Vertical, [axial()]),
            "Axial primary": Layout(LayoutDirection.Horizontal, [axial(), Layout(LayoutDirection.Vertical, others())],
                                    flex_sizes=["2", "1"]),
            "Three views": Layout(LayoutDirection.Horizontal, [axial(), *others()])}


def worker_popen(device: str):
    """``subprocess.Popen`` for the worker: on Linux it is killed when the server dies (even by SIGKILL), and
    ``--device cpu`` hides every GPU from it."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="") if device == "cpu" else None

    def die_with_parent():
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def popen(*args, **kwargs):
        return subprocess.Popen(*args, env=env, preexec_fn=die_with_parent if sys.platform == "linux" else None,
                                **kwargs)
    return popen


async def worker_output(worker: WorkerClient, timeout: float) -> None:
    """Return once the worker has written to its stdout (a reply, or its end), or after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    if worker.process is None or sys.platform == "win32":  # Windows' event loop cannot watch a pipe: poll
        await asyncio.sleep(0.005)
        return
    fd, written = worker.process.stdout.fileno(), loop.create_future()
    loop.add_reader(fd, lambda: written.done() or written.set_result(None))
    try:
        await asyncio.wait_for(written, timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        loop.remove_reader(fd)


class IterMaskPage(TrameApp):
    """The page and its one session.

    Args:
        server: a trame server (None: the default one).
        models: bundle files to offer besides the bundled models (the desktop's *Load model*).
        upload_limit_mb: the largest upload accepted.
        device: ``auto``, ``cpu`` or ``cuda`` for the worker.
    """

    def __init__(self, server=None, models=(), upload_limit_mb: float = 512, device: str = "auto"):
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)  # its chunked file upload script
        self.slicer_app = SlicerApp()
        sequences = self.slicer_app.register_module_logic(slicer.vtkSlicerSequencesLogic())
        install_globals(self.slicer_app.scene, {"colors": self.slicer_app.color_logic,
                                                "volumes": self.slicer_app.volumes_logic,
                                                "segmentations": self.slicer_app.segmentations_logic,
                                                "sequences": sequences})
        register_rca_factories(self.slicer_app.view_manager, self.server, **STREAM)
        self.layout_manager = LayoutManager(self.slicer_app.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict(layouts())
        self.device = device
        self.workflow = Workflow(IterMaskLogic(self.slicer_app.scene, worker=WorkerClient(popen=worker_popen(device))))
        self.editor = self.slicer_app.segmentation_editor
        self.editor.set_undo_stack(UndoStack(undo_limit=10))
        self.editor.segmentation_modified.connect(self._edited)
        self.uploads = files.Uploads(upload_limit_mb)
        self.dicom_series: dict = {}  # the DICOM series an uploaded volume was read from, by node ID: for its SEG
        self.models = {**{name: str(path) for name, path in available_models().items()},
                       **{os.path.basename(str(m)): str(m) for m in models}}
        self.tabs = tabs.OneTab(self.server)
        self.inputs: list = []  # the volume nodes the page opened (never the session's outputs)
        self._upload_parts: list[dict] = []
        self._upload_bytes = 0
        self._shown_outputs = None
        self._plotted_state = None
        self._following = False
        self._fits: dict = {}  # view -> its observer that fits it at its next resize
        self._initial_state()
        self.ui = build_page(self)
        self._set_layout(self.state.im_layout)
        for name, handler in (("im_layout", self.on_layout), ("im_threshold", self.on_threshold),
                              ("im_iteration", self.on_iteration), ("im_model", self.on_model),
                              ("im_effect", self.on_effect), ("im_brush", self.on_brush),
                              ("im_window", self.on_window), ("im_volume", self.on_volume)):
            self.state.change(name)(self._guarded(handler))
        self.server.controller.on_server_exited.add(self.close)

    # --- state ----------------------------------------------------------------------------------------------------
    @property
    def logic(self) -> IterMaskLogic:
        return self.workflow.logic

    @property
    def scene(self):
        return self.slicer_app.scene

    def _initial_state(self) -> None:
        state = self.state
        # A bundle given on the command line is selected (as the desktop's Load model selects it), else the default.
        given = [name for name in self.models if name not in available_models()]
        first = given[-1] if given else default_model() if default_model() in self.models else None
        state.update({
            "im_models": [{"title": name, "value": name} for name in self.models],
            "im_model": first, "im_policy": default_policy(self.models[first]) if first else "itermask2",
            "im_policies": [{"title": label, "value": value} for label, value in panel.POLICIES],
            "im_sources": [{"title": label, "value": value} for value, label in panel.SOURCE_LABELS.items()],
            "im_source": "thresholded", "im_segment_name": "Anomaly", "im_seed": 0,
            "im_volumes": [], "im_volume": None, "im_masks": [], "im_brain_mask": None,
            "im_layouts": list(layouts()), "im_layout": "Axial",
            "im_status": "", "im_error": "", "im_busy": False, "im_can_cancel": False, "im_ready": False,
            "im_stepped": False, "im_has_result": False, "im_dicom": False, "im_show_map": False,
            "im_iteration": 0, "im_iterations": 0, "im_tau": 1.0, "im_tau_max": panel.SLIDER_MAXIMUM,
            "im_tau_label": "—", "im_tau_tooltip": "", "im_tau_stop_label": "—",
            "im_threshold": 1.0, "im_threshold_max": panel.SLIDER_MAXIMUM, "im_threshold_label": "—",
            "im_threshold_tooltip": "", "im_threshold_raw": None, "im_plot": tau_plot_svg({}),
            "im_effect": "none", "im_active_effect": "none", "im_edits": 0, "im_brush": 5.0, "im_window": [0.0, 1.0], "im_window_range": [0.0, 1.0],
            "im_upload_limit": self.uploads.limit_bytes,
        })
        self.show_status()

    def show_status(self) -> None:
        """Everything the panel shows, from the workflow and the session (called after every change)."""
        flow, state = self.workflow, self.state
        state.im_status = flow.status
        state.im_busy, state.im_can_cancel = flow.busy, flow.can_cancel
        state.im_ready, state.im_stepped = self.logic.ready, flow.stepped
        state.im_has_result = flow.result is not None
        state.im_dicom = self.logic.volume is not None and self.logic.volume.GetID() in self.dicom_series
        values = panel.panel_values(self.logic) if self.logic.ready and self.logic.model_info else None
        if values is not None:
            state.im_iteration, state.im_iterations = values.iteration, values.iterations
            state.im_tau, state.im_tau_max = values.tau, values.tau_maximum
            state.im_tau_label, state.im_tau_tooltip = values.tau_label, values.tau_tooltip
            state.im_tau_stop_label = values.tau_stop_label
            if values.threshold is not None:
                state.im_threshold, state.im_threshold_max = values.threshold, values.threshold_maximum
                state.im_threshold_raw = self.logic.threshold  # what the outline and Apply use
            state.im_threshold_label, state.im_threshold_tooltip = values.threshold_label, values.threshold_tooltip
        if self.logic.state is not self._plotted_state:
            self._plotted_state = self.logic.state
            state.im_plot = tau_plot_svg(self.logic.state["plot"] if self.logic.state else {})

    def add_inputs(self, volumes, brain_mask=None) -> None:
        """Scans (and a brain mask) the page opened: listed in the selectors, the first one selected and shown."""
        self.inputs += [v for v in (*volumes, brain_mask) if v is not None]
        present = [n for n in self.inputs if self.scene.IsNodePresent(n)]
        self.state.im_volumes = [{"title": n.GetName(), "value": n.GetID()} for n in present
                                 if not n.IsA("vtkMRMLLabelMapVolumeNode")]
        self.state.im_masks = [{"title": n.GetName(), "value": n.GetID()} for n in present]
        if volumes:
            self.state.im_volume = volumes[0].GetID()
            self.show_volume(volumes[0])
        if brain_mask is not None:
            self.state.im_brain_mask = brain_mask.GetID()

    def node(self, key: str):
        node_id = self.state[key]
        return self.scene.GetNodeByID(node_id) if node_id else None

    # --- errors and the action in flight ----------------------------------------------------------------------------
    def _guarded(self, handler):
        """Every handler shows its failure on the page (one line) and the panel follows the new state."""
        def guarded(*args, **kwargs):
            try:
                handler(*args, **kwargs)
                self.state.im_error = ""
            except ItermaskError as exc:
                self.state.im_error = str(exc)
            except Exception as exc:  # a bug: show it, keep serving
                traceback.print_exc()
                self.state.im_error = f"{type(exc).__name__}: {exc}"
            self.show_status()
        return guarded

    def start(self, action, *args, **kwargs) -> None:
        """Start a workflow action and follow it until it has ended."""
        action(*args, **kwargs)
        if not self._following:
            self._following = True
            create_task(self._follow())

    async def _follow(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.workflow.busy:
                with self.state:
                    try:
                        finished = self.workflow.poll(POLL_BUDGET)
                        self._show_outputs()
                        if finished is not None and finished.event == "done":
                            self._finished(finished.action)
                    except Exception as exc:
                        if not isinstance(exc, ItermaskError):
                            traceback.print_exc()
                        self.state.im_error = str(exc)
                    self.show_status()
                if self.logic.driver.busy:  # a command in flight: its next line
                    polled = loop.time()
                    await worker_output(self.logic.worker, WAIT_S)
                    if self.logic.driver.request.command == "run":  # its steps' progress, a few times a second
                        await asyncio.sleep(polled + PROGRESS_INTERVAL_S - loop.time())
                else:  # the rest of a reply to show, once the websocket has been served
                    await asyncio.sleep(0)
        finally:
            self._following = False

    def _show_outputs(self) -> None:
        """A new session's outputs into the slice views (input behind, mask filled, preview outlined)."""
        outputs = self.logic.outputs
        if outputs is not None and outputs is not self._shown_outputs:
            self._shown_outputs = outputs
            self.logic.show_in_slice_views(self.state.im_show_map)

    def _finished(self, action: str) -> None:
        if action == "example":
            volume, brain = self.logic.example_nodes
            self.add_inputs([volume], brain)

    # --- scans ----------------------------------------------------------------------------------------------------
    def show_volume(self, volume) -> None:
        """``volume`` as the slice views' background, its window/level on the slider, views fitted to it."""
        self.slicer_app.display_manager.show_volume_in_slice_background(volume)
        self.slicer_app.display_manager.show_volume_in_slice_foreground(None)
        self.slicer_app.display_manager.reset_views()
        self.state.im_window_range = list(VolumeWindowLevel.get_volume_scalar_range(volume))
        self.state.im_window = list(VolumeWindowLevel.get_volume_display_range(volume))

    def load_files(self, paths, brain_mask=None) -> list:
        """Scans from files (the command line's, or uploads once written), and a brain mask file; the scans' nodes."""
        volumes = self.slicer_app.io_manager.load_volumes([str(p) for p in paths])
        if len(volumes) != len(paths):
            raise ItermaskError(f"could not read {', '.join(os.path.basename(str(p)) for p in paths)} as volumes")
        mask = self.slicer_app.io_manager.load_volumes([str(brain_mask)])[0] if brain_mask else None
        self.add_inputs(volumes, mask)
        return volumes

    def on_upload_chunk(self, chunk: list[dict]) -> None:
        """A chunk of a tab's upload; the empty chunk that ends it reads the files into the scene (and deletes the
        temporary files). Chunks past the size limit are dropped as they arrive, and the upload is refused."""
        if chunk:
            self._upload_bytes += sum(len(part.get("content") or b"") for part in chunk)
            self._upload_parts = [] if self._upload_bytes > self.uploads.limit_bytes else self._upload_parts + chunk
            return
        parts, size = self._upload_parts, self._upload_bytes
        self._upload_parts, self._upload_bytes = [], 0
        with self.state:
            self._guarded(self._load_upload)(parts, size)

    def _load_upload(self, parts: list[dict], size: int) -> None:
        self._check_idle()
        self.uploads.check_size(size)
        self.open_scans(self.uploads.write(parts))

    def open_paths(self, paths, brain_mask=None) -> list:
        """Scans named on the command line: volume files, or folders of a DICOM series (read as a zipped one is)."""
        return self.open_scans([self.uploads.dicom_folder(Path(p)) if Path(p).is_dir() else files.Scan(Path(p))
                                for p in paths], brain_mask)

    def open_scans(self, scans: list, brain_mask=None) -> list:
        """:class:`.files.Scan` s into the scene (the DICOM series each was read from kept for its SEG); the files
        written for them are deleted once read. Their volume nodes."""
        try:
            volumes = self.load_files([scan.path for scan in scans], brain_mask)
            self.dicom_series.update({v.GetID(): scan.series for v, scan in zip(volumes, scans) if scan.series})
            return volumes
        finally:
            self.uploads.remove(scans)

    def on_volume(self, **_):
        volume = self.node("im_volume")
        if volume is not None and volume is not self.logic.volume and not self.workflow.busy:
            self.show_volume(volume)

    def on_window(self, im_window, **_):
        volume = self.logic.volume or self.node("im_volume")
        if volume is not None and im_window:
            VolumeWindowLevel.set_volume_node_display_min_max_range(volume, *im_window)

    def on_layout(self, im_layout, **_):
        self._set_layout(im_layout)

    def _set_layout(self, name: str) -> None:
        """Show layout ``name``; each of its views is fitted to the scan now and again once the browser has sized it
        (a view is 300 × 300 pixels until the page has laid it out, and a fit for another size crops the scan)."""
        self.layout_manager.set_layout(name)
        views = self.slicer_app.view_manager
        for view in views.filter_visible_views(views.get_views()):
            view.reset_view()

            def fit_once(interactor, _event, view=view):
                interactor.RemoveObserver(self._fits.pop(view))
                view.reset_view()
            if view not in self._fits:
                self._fits[view] = view.interactor().AddObserver(vtkCommand.WindowResizeEvent, fit_once)

    # --- the workflow's buttons -----------------------------------------------------------------------------------
    def _check_idle(self) -> None:
        if self.workflow.busy:
            raise ItermaskError("wait until the current step has finished (or cancel it)")

    def _settings(self) -> dict:
        volume = self.node("im_volume")
        if volume is None:
            raise ItermaskError("open a scan first (upload one, or press Load example)")
        return dict(volume=volume, brain_mask=self.node("im_brain_mask"), model=self.models[self.state.im_model],
                    policy=self.state.im_policy, seed=int(self.state.im_seed or 0), device=self.device)

    def _leave_editing(self) -> None:
        self.editor.deactivate_effect()
        self.state.im_effect = self.state.im_active_effect = "none"

    def on_model(self, im_model, **_):
        if im_model in self.models:
            self.state.im_policy = default_policy(self.models[im_model])

    def on_load_example(self):
        self.start(self.workflow.load_example)

    def on_segment(self):
        self._leave_editing()
        self.start(self.workflow.segment, **self._settings())

    def on_initialize(self):
        self._leave_editing()
        self.start(self.workflow.initialize, **self._settings())

    def on_step(self):
        self.start(self.workflow.step)

    def on_back(self):
        self.start(self.workflow.back)

    def on_run(self):
        self.start(self.workflow.run)

    def on_cancel(self):
        self.workflow.cancel()

    def on_reset(self):
        self._leave_editing()
        self.workflow.reset()
        self._shown_outputs = None

    def on_tau(self, relative):
        if self.logic.ready:
            self.start(self.workflow.set_tau, panel.tau_from_slider(self.logic, relative))

    def on_iteration(self, im_iteration, **_):
        if im_iteration is not None:  # Workflow.seek ignores the iteration already shown
            self.start(self.workflow.seek, int(im_iteration))

    def on_threshold(self, im_threshold, **_):
        if self.workflow.stepped and self.logic.preview is not None and not self.workflow.busy:
            threshold = panel.threshold_from_slider(self.logic, im_threshold)
            if abs(threshold - self.logic.threshold) > 1e-9 * max(1.0, threshold):
                self.workflow.preview_threshold(threshold)

    def on_show_map(self):
        if self.logic.ready:
            self.logic.show_in_slice_views(self.state.im_show_map)

    def on_apply(self):
        result = self.workflow.apply(self.state.im_segment_name, source=self.state.im_source)
        result.SetAttribute("IterMask.output", "1")
        self.editor.set_active_segmentation(result, self.logic.volume)

    def on_continue(self):
        self._leave_editing()
        self.start(self.workflow.continue_from_result)

    # --- editing the result ---------------------------------------------------------------------------------------
    def on_effect(self, im_effect, **_):
        if im_effect != "none" and self.workflow.result is None:
            self.state.im_effect = "none"
            raise ItermaskError("apply a result first, then paint or erase it")
        if self.workflow.result is not None:
            self.editor.set_active_effect_type(EFFECTS[im_effect])
            self.on_brush(self.state.im_brush)
        self.state.im_active_effect = im_effect  # what the server has made active (the page's choice comes first)

    def _edited(self, *_):
        """The result's voxels changed (a stroke, an undo): counted, so the page knows the edit has landed."""
        with self.state:
            self.state.im_edits += 1

    def on_brush(self, im_brush, **_):
        effect = self.editor.active_effect
        if hasattr(effect, "set_brush_diameter"):
            effect.set_brush_diameter(float(im_brush))

    def on_undo(self):
        if self.editor.undo_stack.can_undo():
            self.editor.undo_stack.undo()

    # --- downloads ------------------------------------------------------------------------------------------------
    def download(self, kind: str):
        """The applied (and edited) result as ``.nii.gz`` labelmap, ``.seg.nrrd`` or (a DICOM scan's) DICOM SEG, on
        the input grid."""
        result = self.workflow.result
        if result is None:
            raise ItermaskError("apply a result first")
        if kind == "dcm":
            data = dicom.segmentation_dicom(result, self.logic, self.dicom_series.get(self.logic.volume.GetID()))
        else:
            data = files.mask_nifti(result, self.logic.volume) if kind == "nii" else files.segmentation_nrrd(result)
        return self.server.protocol.addAttachment(data)

    def on_download(self, kind: str):
        try:
            return self.download(kind)
        except ItermaskError as exc:
            with self.state:
                self.state.im_error = str(exc)
            return None

    # --- end ------------------------------------------------------------------------------------------------------
    def close(self, **_):
        """Stop the worker and delete the uploads folder (the server is exiting)."""
        self.workflow.close()
        self.uploads.close()
