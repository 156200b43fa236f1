"""IterMaskSlicer: unsupervised brain-lesion segmentation (IterMask) as a 3D Slicer module.

This file holds only the Slicer classes. The MRML logic is in IterMaskSlicerLib (no Qt, no torch); the model runs in
a worker process started with PythonSlicer (IterMaskSlicerLib/worker.py), so torch never runs in Slicer's process
and this module loads before torch is installed.
"""
import functools
import logging
import os
import subprocess
from typing import Annotated, Union

import qt
import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from IterMaskSlicerLib import dependencies, readable
from IterMaskSlicerLib.client import WorkerClient
from IterMaskSlicerLib.logic import DEFAULT_MODEL, SOURCES, IterMaskLogic, default_policy
from IterMaskSlicerLib.parameters import MODULE_NAME

POLICIES = (("IterMask² (calibrated τ)", "itermask2"), ("IterMask3D (subject-specific τ)", "itermask3d"))
SOURCE_LABELS = {"thresholded": "Thresholded map (outlined)", "mask": "Current mask (filled)"}


class IterMaskSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "IterMask"
        parent.categories = ["Segmentation"]
        parent.contributors = ["IterMaskSlicer developers"]
        parent.helpText = (
            "Segments what a network trained only on healthy brains cannot reconstruct: tumours, strokes, MS lesions, "
            "artifacts. Press <b>Segment</b> for a result in one click (try <b>Load example</b> first), or Initialize "
            "and step through the shrinking mask, raise τ to shrink further, pick the iteration that looks right, set "
            "the segmentation threshold (its outline is what Apply creates), Apply, and edit the result in the "
            "Segment Editor.<br><b>For research use only</b>: not a medical device, not for diagnosis or treatment.")
        parent.acknowledgementText = (
            "Implements IterMask² (Liang et al., MICCAI 2024) and IterMask3D. The default FLAIR model was trained on "
            "BraTS 2013 (CC BY-NC-SA 3.0) and Lesjak et al. 2018 MS data (CC BY).")


@parameterNodeWrapper
class IterMaskSlicerParameterNode:
    """The module's settings, stored in the scene; IterMaskSlicerLib/parameters.py writes the same names (checked by
    test_slicer_logic)."""

    inputVolume: vtkMRMLScalarVolumeNode
    brainMask: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    model: str = DEFAULT_MODEL
    policy: Annotated[str, Choice([p for _, p in POLICIES])] = "itermask2"
    seed: int = 0
    tau: float = 0.0
    threshold: float = 0.0
    iteration: int = -1
    iterations: int = 0
    segmentName: str = "Anomaly"
    applySource: Annotated[str, Choice(list(SOURCES))] = "thresholded"
    showAnomalyMap: bool = False


def slicerPopen(*args, **kwargs):
    """subprocess.Popen with the environment Slicer was started from, as slicer.util.launchConsoleProcess uses (but
    with stderr kept apart from the protocol on stdout)."""
    return subprocess.Popen(*args, env=slicer.util.startupEnvironment(), **kwargs)


def ensureTorch():
    """Install torch if the user agrees (PyTorch extension's installer when present); False if they decline."""
    problem = dependencies.torch_problem()
    if problem is None:
        return True
    try:
        import PyTorchUtils

        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    except ImportError:
        torchLogic = None
        if not slicer.util.confirmOkCancelDisplay(f"{problem}. IterMask needs PyTorch ≥ {dependencies.MINIMUM_TORCH}"
                                                  ". Install it now? This can take minutes."):
            return False
    with slicer.util.WaitCursor():
        dependencies.install_torch(torchLogic, slicer.util.pip_install)
    return True


class IterMaskSlicerLogic(ScriptedLoadableModuleLogic):
    """``slicer.util.getModuleLogic("IterMaskSlicer")``: the MRML logic of IterMaskSlicerLib, one per module."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.impl = IterMaskLogic(slicer.mrmlScene, worker=WorkerClient(popen=slicerPopen))

    def getParameterNode(self):
        return IterMaskSlicerParameterNode(self.impl.parameter_node())

    def segment(self, volumeNode, brainMaskNode=None, model=DEFAULT_MODEL, policy=None, seed=0,
                segmentName="Anomaly"):
        """One call from a volume node to a segmentation node (Python console, batch loops); waits for the result."""
        if not ensureTorch():
            raise RuntimeError("IterMask needs PyTorch; installation was declined")
        return self.impl.segment(volumeNode, brainMaskNode, model=model, policy=policy, seed=seed,
                                 segment_name=segmentName)


class IterMaskSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.afterCommand = None  # what to do when the command in flight has finished (Segment chains two)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/IterMaskSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = IterMaskSlicerLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(30)
        self.timer.connect("timeout()", self.onPoll)
        for label, policy in POLICIES:
            self.ui.policyComboBox.addItem(label, policy)
        for source in SOURCES:
            self.ui.applySourceComboBox.addItem(SOURCE_LABELS[source], source)
        self.refreshModels()
        for signal, widget, handler in (
                ("clicked()", self.ui.loadExampleButton, self.onLoadExample),
                ("clicked()", self.ui.segmentButton, self.onSegment),
                ("clicked()", self.ui.initializeButton, self.onInitialize),
                ("clicked()", self.ui.stepButton, lambda: self.begin("step")),
                ("clicked()", self.ui.runButton, lambda: self.begin("run", max_steps=None)),
                ("clicked()", self.ui.backButton, lambda: self.begin("back")),
                ("clicked()", self.ui.cancelButton, self.onCancel),
                ("clicked()", self.ui.resetButton, self.onReset),
                ("clicked()", self.ui.loadModelButton, self.onLoadModel),
                ("currentIndexChanged(int)", self.ui.modelComboBox, self.onModelChanged),
                ("valueChanged(double)", self.ui.iterationSlider, self.onIterationSlider),
                ("valueChanged(double)", self.ui.tauSlider, self.onTau),
                ("valueChanged(double)", self.ui.thresholdSlider, self.onThreshold),
                ("toggled(bool)", self.ui.showAnomalyMapCheckBox, self.onShowAnomalyMap),
                ("clicked()", self.ui.showPlotButton, self.onShowPlot),
                ("clicked()", self.ui.applyButton, self.onApply),
                ("clicked()", self.ui.continueFromSegmentationButton, self.onContinue)):
            widget.connect(signal, self.withErrorDisplay(handler))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.updateButtons()

    def withErrorDisplay(self, handler):
        """Every handler shows its failure to the user (and the buttons follow the new state)."""
        @functools.wraps(handler)
        def guarded(*args):
            with slicer.util.tryWithErrorDisplay("IterMask failed.", waitCursor=True):
                handler(*args)
            self.updateButtons()
        return guarded

    def cleanup(self):
        self.timer.stop()
        self.removeObservers()
        self.logic.impl.close()

    def enter(self):
        self.refreshModels()  # bundles added (or torch installed) since the module was last shown
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        # The scene's nodes are about to go: stop showing into them, and forget the session that wrote there.
        self.timer.stop()
        self.logic.impl.close()
        self.afterCommand = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.updateButtons()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # inputVolume, brainMask, seed, segmentName and showAnomalyMap follow their widgets both ways.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)

    # --- models ---------------------------------------------------------------------------------------------------
    def refreshModels(self, select=None):
        """Bundled models, listed from their files (no torch needed); the current choice is kept."""
        from itermask.discovery import available_models

        current = select or self.ui.modelComboBox.currentData
        self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        for name, path in available_models().items():
            self.ui.modelComboBox.addItem(name, str(path))
        if select:
            self.ui.modelComboBox.addItem(os.path.basename(select), select)
        index = self.ui.modelComboBox.findData(current) if current else -1
        if index < 0:
            index = max(self.ui.modelComboBox.findText(DEFAULT_MODEL), 0)
        self.ui.modelComboBox.setCurrentIndex(index)
        self.ui.modelComboBox.blockSignals(False)
        self.onModelChanged()

    def onModelChanged(self, index=None):
        """Select the chosen bundle's own default policy."""
        if self.ui.modelComboBox.currentData:
            policy = default_policy(self.ui.modelComboBox.currentData)
            self.ui.policyComboBox.setCurrentIndex(self.ui.policyComboBox.findData(policy))

    def onLoadModel(self):
        path = qt.QFileDialog.getOpenFileName(None, "IterMask model bundle", "", "IterMask bundles (*.pt)")
        if path:
            self.refreshModels(select=path)

    # --- commands to the worker -----------------------------------------------------------------------------------
    @property
    def impl(self):
        return self.logic.impl

    def begin(self, command, **arguments):
        self.impl.begin(command, **arguments)
        self.startPolling(busy=command == "run")

    def startPolling(self, busy):
        self.ui.progressBar.visible = True
        self.ui.progressBar.maximum = 0 if busy else 1  # 0: a busy indicator
        self.ui.statusLabel.text = "Working…"
        self.timer.start()

    def onPoll(self):
        """Show what the worker sent; the widget never waits for it. A failure leaves the scene as it was."""
        try:
            final = self.impl.poll()
        except Exception as exc:
            self.afterCommand = None
            self.finishCommand()
            slicer.util.errorDisplay(str(exc))
            self.ui.statusLabel.text = "Failed: the scene is as before."
            return
        self.showState()
        if final is None:
            return
        self.finishCommand()
        self.ui.statusLabel.text = "Cancelled: the scene is as before the run." if final["event"] == "cancelled" \
            else self.describeIteration()
        after, self.afterCommand = self.afterCommand, None
        if after is not None and final["event"] == "done":
            self.withErrorDisplay(after)()

    def finishCommand(self):
        self.timer.stop()
        self.ui.progressBar.visible = False
        self.updateButtons()

    def onLoadExample(self):
        if dependencies.installed_version("nilearn") is None:
            if not slicer.util.confirmOkCancelDisplay("The example scan is made from nilearn's MNI152 templates. "
                                                      "Install nilearn now?"):
                return
            with slicer.util.WaitCursor():
                dependencies.install_packages(["nilearn"], slicer.util.pip_install)
        self.afterCommand = self.showExample
        self.begin("example")

    def showExample(self):
        volume, brain = self.impl.example_nodes
        self._parameterNode.inputVolume, self._parameterNode.brainMask = volume, brain
        slicer.util.setSliceViewerLayers(background=volume, fit=True)
        self.ui.statusLabel.text = "Example loaded: press Segment."

    def onInitialize(self, then=None):
        if not ensureTorch():
            return
        self.afterCommand = functools.partial(self.showSession, then)
        self.impl.begin_initialize(self._parameterNode.inputVolume, self._parameterNode.brainMask,
                                   model=self.ui.modelComboBox.currentData, policy=self.ui.policyComboBox.currentData,
                                   seed=self._parameterNode.seed)
        self.startPolling(busy=True)

    def showSession(self, then=None):
        self.impl.show_in_slice_views(self._parameterNode.showAnomalyMap)
        self.ui.statusLabel.text = "Ready: press Step or Run to convergence."
        if then is not None:
            then()

    def onSegment(self):
        """Initialize, run to convergence and show the result: the one-click way."""
        self.onInitialize(then=lambda: self.begin("run", max_steps=None))

    def onCancel(self):
        self.impl.cancel()
        self.ui.statusLabel.text = "Cancelling after the current step…"

    def onReset(self):
        self.impl.reset()

    def onIterationSlider(self, value):
        if self.impl.ready and int(value) != self.impl.state["position"]:
            self.begin("seek", index=int(value))

    def onTau(self, relative):
        tau = relative * self.impl.model_info["calibration"]["tau"]
        if self.impl.ready and abs(tau - self.impl.state["tau"]) > 1e-9:
            self.begin("set_tau", tau=tau)

    def onThreshold(self, relative):
        if self.impl.ready and self.impl.preview is not None:
            self.impl.preview_threshold(relative * self.impl.model_info["calibration"]["threshold"])
            self.showState()

    def onShowAnomalyMap(self, checked):
        if self.impl.ready:
            self.impl.show_in_slice_views(checked)

    def onShowPlot(self):
        if self.impl.ready:
            slicer.modules.plots.logic().ShowChartInLayout(self.impl.outputs.plot.chart)

    def onApply(self):
        source = self.ui.applySourceComboBox.currentData
        self.applied = self.impl.apply(self._parameterNode.segmentName or "Anomaly", source=source)
        self.ui.statusLabel.text = f"Created {self.applied.GetName()}: edit it in the Segment Editor if needed."

    def onContinue(self):
        self.impl.begin_continue_from_segmentation(self.applied)
        self.afterCommand = lambda: self.begin("step")
        self.startPolling(busy=False)

    # --- state ------------------------------------------------------------------------------------------------------
    def describeIteration(self):
        state = self.impl.state
        if not state or not state["iteration"]:
            return "Ready: press Step or Run to convergence." if state else "Select a volume and press Segment."
        it = state["iteration"]
        done = " Converged." if state["converged"] else ""
        return (f"Iteration {it['index']} ({it['phase']}): mask {100 * it['mask_fraction']:.1f}% of the brain, "
                f"{it['seconds']:.1f} s.{done}")

    def showState(self):
        """Sliders and labels from the session (without their signals coming back as a user's change)."""
        state = self.impl.state
        if not state:
            return
        calibration = self.impl.model_info["calibration"]
        self.setQuietly(self.ui.iterationSlider, state["position"], maximum=max(state["count"] - 1, 0))
        self.setQuietly(self.ui.tauSlider, state["tau"] / calibration["tau"], maximum=5.0)
        self.ui.tauLabel.text, self.ui.tauSlider.toolTip = readable.tau_text(state["tau"], calibration)
        self.ui.tauStopLabel.text = "—" if state["tau_stop"] is None else \
            readable.tau_text(state["tau_stop"], calibration)[0]
        if self.impl.preview is not None:
            threshold = self.impl.threshold
            self.setQuietly(self.ui.thresholdSlider, threshold / calibration["threshold"], maximum=5.0)
            self.ui.thresholdLabel.text, self.ui.thresholdSlider.toolTip = readable.threshold_text(
                threshold, calibration, state["tau_stop"])

    @staticmethod
    def setQuietly(slider, value, maximum):
        slider.blockSignals(True)
        slider.maximum = max(maximum, value)
        slider.value = value
        slider.blockSignals(False)

    def updateButtons(self):
        """Whatever changes the session is disabled while a command is in flight: nothing can race a step."""
        idle, ready = not self.impl.busy, self.impl.ready
        stepped = ready and self.impl.state["position"] >= 0
        for widget in (self.ui.initializeButton, self.ui.segmentButton, self.ui.loadExampleButton,
                       self.ui.inputVolumeSelector, self.ui.brainMaskSelector, self.ui.modelComboBox,
                       self.ui.policyComboBox, self.ui.loadModelButton, self.ui.seedSpinBox):
            widget.enabled = idle
        for widget in (self.ui.stepButton, self.ui.runButton, self.ui.resetButton, self.ui.tauSlider):
            widget.enabled = idle and ready
        for widget in (self.ui.backButton, self.ui.iterationSlider, self.ui.thresholdSlider, self.ui.applyButton):
            widget.enabled = idle and stepped
        self.ui.continueFromSegmentationButton.enabled = idle and stepped and hasattr(self, "applied")
        self.ui.cancelButton.enabled = not idle


class IterMaskSlicerTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode → Reload and Test). CI cannot run it: it has no Slicer application."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        missing = dependencies.torch_problem() or (
            dependencies.installed_version("nilearn") is None and "nilearn (for the example scan) is not installed")
        if missing and slicer.app.testingEnabled():
            # Extension build machines test without network or GPU: never install torch there.
            logging.info(f"IterMask in-Slicer test skipped: {missing}")
            return
        self.setUp()
        self.test_example_segment_and_apply()

    def test_example_segment_and_apply(self):
        logic = slicer.util.getModuleLogic(MODULE_NAME)
        volume, brain = logic.impl.load_example()
        segmentation = logic.segment(volume, brain, segmentName="Lesion")
        self.assertEqual(segmentation.GetSegmentation().GetNthSegment(0).GetName(), "Lesion")
        logging.info("IterMask in-Slicer test passed")
