"""IterMaskSlicer: unsupervised brain-lesion segmentation (IterMask) as a 3D Slicer module.

This file holds only the Slicer classes, kept thin: the widget maps each button to one call of
IterMaskSlicerLib's :class:`Workflow` and its timer to ``Workflow.poll`` and the display. What a button chains,
cancels or rolls back lives in IterMaskSlicerLib (no Qt, no torch; tested on a plain MRML scene). The model runs in a
worker process started with PythonSlicer (IterMaskSlicerLib/worker.py), so torch never runs in Slicer's process for
IterMask and this module loads before torch is installed.
"""
import functools
import logging
import os
import subprocess
from typing import Annotated, Union

import qt
import slicer
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from IterMaskSlicerLib import dependencies, panel
from IterMaskSlicerLib.client import WorkerClient
from IterMaskSlicerLib.logic import SOURCES, IterMaskLogic, default_model, default_policy, model_note
from IterMaskSlicerLib.parameters import MODULE_NAME
from IterMaskSlicerLib.panel import POLICIES, SOURCE_LABELS
from IterMaskSlicerLib.workflow import Workflow


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
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """The example scan in Slicer's Sample Data module, where Slicer users look first. Nothing is downloaded: the
    custom loader makes it offline, as Load example does."""
    import SampleData

    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="IterMask", sampleName="IterMask example FLAIR", uris=[], fileNames=[], nodeNames=[],
        thumbnailFileName=os.path.join(os.path.dirname(__file__), "Resources", "Icons", "IterMaskSlicer.png"),
        customDownloader=loadExampleSampleData)


def loadExampleSampleData(source=None):
    """Sample Data's loader for the example: the scan and its brain mask, made by the worker (needs nilearn)."""
    if not ensureNilearn():
        return []
    with slicer.util.WaitCursor():
        volume, brain = slicer.util.getModuleLogic(MODULE_NAME).impl.load_example()
    slicer.util.setSliceViewerLayers(background=volume, fit=True)
    return [volume, brain]


@parameterNodeWrapper
class IterMaskSlicerParameterNode:
    """The module's settings, stored in the scene; IterMaskSlicerLib/parameters.py writes the same names in the same
    layout (checked by test_slicer_logic)."""

    inputVolume: vtkMRMLScalarVolumeNode
    brainMask: Union[vtkMRMLLabelMapVolumeNode, vtkMRMLSegmentationNode, None]
    model: str = ""  # a bundled model's name or a bundle file; "" until one is chosen: the FLAIR default
    policy: Annotated[str, Choice(["", *(p for _, p in POLICIES)])] = ""  # "": the model's own default
    seed: Annotated[int, WithinRange(0, 999999)] = 0
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


def ensureNilearn():
    """The example scan is made from nilearn's templates: install nilearn if the user agrees."""
    if dependencies.installed_version("nilearn") is not None:
        return True
    if not slicer.util.confirmOkCancelDisplay("The example scan is made from nilearn's MNI152 templates. "
                                              "Install nilearn now?"):
        return False
    with slicer.util.WaitCursor():
        dependencies.install_packages(["nilearn"], slicer.util.pip_install)
    return True


def ensureTorch(workflow):
    """Install torch if the user agrees; False if they decline (nothing is shown then). The PyTorch extension's
    installer is used when present: it picks the CUDA or CPU build, asks the user itself, and ends by importing torch
    into Slicer's own process (IterMask itself only uses torch in its worker)."""
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
    workflow.close()  # a running worker holds the old packages' files open (Windows cannot replace them then)
    with slicer.util.WaitCursor():
        return dependencies.install_torch(torchLogic, slicer.util.pip_install)


class IterMaskSlicerLogic(ScriptedLoadableModuleLogic):
    """``slicer.util.getModuleLogic("IterMaskSlicer")``: the MRML logic of IterMaskSlicerLib and the module's
    workflow on it, one per module."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.impl = IterMaskLogic(slicer.mrmlScene, worker=WorkerClient(popen=slicerPopen))
        self.workflow = Workflow(self.impl)

    def getParameterNode(self):
        return IterMaskSlicerParameterNode(self.impl.parameter_node())

    def segment(self, volumeNode, brainMaskNode=None, model=None, policy=None, seed=0, segmentName="Anomaly"):
        """One call from a volume node to a segmentation node (Python console, batch loops); waits for the result."""
        if not ensureTorch(self.workflow):
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

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/IterMaskSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = IterMaskSlicerLogic()
        self.workflow = self.logic.workflow
        self.timer = qt.QTimer()
        self.timer.setInterval(30)
        self.timer.connect("timeout()", self.onPoll)
        self.ui.iterationSlider.tracking = False  # one seek when the slider is released, not one per drag step
        for label, policy in POLICIES:
            self.ui.policyComboBox.addItem(label, policy)
        for source in SOURCES:
            self.ui.applySourceComboBox.addItem(SOURCE_LABELS[source], source)
        flow, node = self.workflow, lambda: self._parameterNode
        for signal, widget, handler in (
                ("clicked()", self.ui.loadExampleButton, self.onLoadExample),
                ("clicked()", self.ui.segmentButton, lambda: self.withTorch(flow.segment)),
                ("clicked()", self.ui.initializeButton, lambda: self.withTorch(flow.initialize)),
                ("clicked()", self.ui.stepButton, flow.step),
                ("clicked()", self.ui.runButton, flow.run),
                ("clicked()", self.ui.backButton, flow.back),
                ("clicked()", self.ui.cancelButton, flow.cancel),
                ("clicked()", self.ui.resetButton, flow.reset),
                ("clicked()", self.ui.loadModelButton, self.onLoadModel),
                ("currentIndexChanged(int)", self.ui.modelComboBox, self.onModelChanged),
                ("currentIndexChanged(int)", self.ui.policyComboBox, self.onPolicyChanged),
                ("valueChanged(double)", self.ui.iterationSlider, lambda value: flow.seek(int(value))),
                ("valueChanged(double)", self.ui.tauSlider, self.onTau),
                ("valueChanged(double)", self.ui.thresholdSlider, self.onThreshold),
                ("toggled(bool)", self.ui.showAnomalyMapCheckBox, self.showInSliceViews),
                ("clicked()", self.ui.showPlotButton, self.onShowPlot),
                ("clicked()", self.ui.applyButton, lambda: flow.apply(node().segmentName, node().applySource)),
                ("clicked()", self.ui.continueFromSegmentationButton, flow.continue_from_result)):
            widget.connect(signal, self.act(handler))
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.refreshModels()
        self.updateButtons()

    def act(self, handler):
        """A button's handler: its failure is shown to the user; then polling starts if an action began."""
        @functools.wraps(handler)
        def guarded(*args):
            with slicer.util.tryWithErrorDisplay("IterMask failed.", waitCursor=True):
                handler(*args)
            if self.workflow.busy:
                self.timer.start()
            self.showState()
        return guarded

    def cleanup(self):
        self.timer.stop()
        self.removeObservers()
        self.workflow.close()

    def enter(self):
        self.initializeParameterNode()
        self.refreshModels()  # bundles added (or torch installed) since the module was last shown

    def exit(self):
        if self._parameterNode and self._parameterNodeGuiTag:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        # The scene's nodes are about to go: stop the worker now (mid-run too) and forget the session.
        self.timer.stop()
        self.workflow.close()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.showState()

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

    # --- models: the choice is the parameter node's, so it survives leaving the module and saving the scene ---------
    def refreshModels(self):
        """Bundled models, listed from their files (no torch needed), and a chosen bundle file."""
        from itermask.discovery import available_models

        chosen = self._parameterNode.model or default_model()
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        for name, path in available_models().items():
            combo.addItem(name, name)
        if combo.findData(chosen) < 0:
            combo.addItem(os.path.basename(chosen), chosen)
        combo.setCurrentIndex(combo.findData(chosen))
        combo.blockSignals(False)
        self.selectPolicy(self._parameterNode.policy or default_policy(chosen))
        combo.toolTip = model_note(chosen)  # e.g. that T1 has no validated model, and what this one gave

    def onModelChanged(self, index=None):
        """A model chosen by the user comes with its own default policy."""
        self._parameterNode.model = self.ui.modelComboBox.currentData
        self.selectPolicy(default_policy(self._parameterNode.model))
        self.ui.modelComboBox.toolTip = self.ui.statusLabel.text = model_note(self._parameterNode.model)

    def onPolicyChanged(self, index=None):
        self._parameterNode.policy = self.ui.policyComboBox.currentData

    def selectPolicy(self, policy):
        self.ui.policyComboBox.setCurrentIndex(self.ui.policyComboBox.findData(policy))

    def onLoadModel(self):
        path = qt.QFileDialog.getOpenFileName(None, "IterMask model bundle", "", "IterMask bundles (*.pt)")
        if path:
            self._parameterNode.model = path
            self.refreshModels()
            self.onModelChanged()

    # --- actions that need a dialog first ---------------------------------------------------------------------------
    def withTorch(self, action):
        """Initialize or Segment with the parameter node's settings, once torch is there (or the user declined)."""
        if ensureTorch(self.workflow):
            node = self._parameterNode
            action(node.inputVolume, node.brainMask, model=node.model or None, policy=node.policy, seed=node.seed)

    def onLoadExample(self):
        if ensureNilearn():
            self.workflow.load_example()

    def onTau(self, relative):
        if self.workflow.logic.ready:
            self.workflow.set_tau(panel.tau_from_slider(self.workflow.logic, relative))

    def onThreshold(self, relative):
        if self.workflow.logic.ready:
            self.workflow.preview_threshold(panel.threshold_from_slider(self.workflow.logic, relative))

    def showInSliceViews(self, *args):
        if self.workflow.logic.ready:
            self.workflow.logic.show_in_slice_views(self._parameterNode.showAnomalyMap)

    def onShowPlot(self):
        if self.workflow.logic.ready:
            slicer.modules.plots.logic().ShowChartInLayout(self.workflow.logic.outputs.plot.chart)

    # --- the poll and the display -----------------------------------------------------------------------------------
    def onPoll(self):
        """Show what the worker sent (never waits). A failure, or a display that fails, stops the timer and is shown
        once; the workflow has put session and scene back as they were."""
        try:
            finished = self.workflow.poll()
            if finished is not None and finished.event == "done":
                self.showFinished(finished.action)
            self.showState()
        except Exception as exc:
            self.timer.stop()
            self.showState()
            slicer.util.errorDisplay(f"IterMask failed: {exc}")
            return
        if not self.workflow.busy:
            self.timer.stop()

    def showFinished(self, action):
        logic = self.workflow.logic
        if action == "example":
            volume, brain = logic.example_nodes
            self._parameterNode.inputVolume, self._parameterNode.brainMask = volume, brain
            slicer.util.setSliceViewerLayers(background=volume, fit=True)
        elif action in ("initialize", "segment"):
            self.showInSliceViews()

    def showState(self):
        """Status, progress, sliders and labels from the workflow (without their signals coming back as a user's
        change), and which buttons can act."""
        flow, logic = self.workflow, self.workflow.logic
        self.ui.statusLabel.text = flow.status
        self.ui.progressBar.visible = flow.busy
        self.ui.progressBar.maximum = 0  # a busy indicator
        shown = panel.panel_values(logic)
        if shown is not None:
            self.setQuietly(self.ui.iterationSlider, shown.iteration, maximum=max(shown.iterations - 1, 0))
            self.setQuietly(self.ui.tauSlider, shown.tau, maximum=shown.tau_maximum)
            self.ui.tauLabel.text, self.ui.tauSlider.toolTip = shown.tau_label, shown.tau_tooltip
            self.ui.tauStopLabel.text = shown.tau_stop_label
            if shown.threshold is not None:
                self.setQuietly(self.ui.thresholdSlider, shown.threshold, maximum=shown.threshold_maximum)
                self.ui.thresholdLabel.text = shown.threshold_label
                self.ui.thresholdSlider.toolTip = shown.threshold_tooltip
        self.updateButtons()

    @staticmethod
    def setQuietly(slider, value, maximum):
        slider.blockSignals(True)
        slider.maximum = maximum
        slider.value = value
        slider.blockSignals(False)

    def updateButtons(self):
        """Whatever changes the session is disabled while an action is in progress: nothing can race a step."""
        flow = self.workflow
        idle, ready, stepped = not flow.busy, flow.logic.ready, flow.stepped
        for widget in (self.ui.initializeButton, self.ui.segmentButton, self.ui.loadExampleButton,
                       self.ui.inputVolumeSelector, self.ui.brainMaskSelector, self.ui.modelComboBox,
                       self.ui.policyComboBox, self.ui.loadModelButton, self.ui.seedSpinBox):
            widget.enabled = idle
        for widget in (self.ui.stepButton, self.ui.runButton, self.ui.resetButton, self.ui.tauSlider):
            widget.enabled = idle and ready
        for widget in (self.ui.backButton, self.ui.thresholdSlider, self.ui.applyButton):
            widget.enabled = idle and stepped
        self.ui.iterationSlider.enabled = stepped and (idle or flow.action == "seek")
        self.ui.continueFromSegmentationButton.enabled = idle and stepped and flow.result is not None
        self.ui.cancelButton.enabled = flow.can_cancel


class IterMaskSlicerTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode → Reload and Test, or ctest on an extension build machine)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_example_segment_and_apply()

    def test_example_segment_and_apply(self):
        # ctest calls test_* methods directly (slicer_add_python_unittest), so the skip lives here, not in runTest.
        # Extension build machines test without network or GPU: never install anything there.
        missing = dependencies.torch_problem() or (
            dependencies.installed_version("nilearn") is None and "nilearn (for the example scan) is not installed")
        if missing:
            self.skipTest(f"IterMask in-Slicer test skipped: {missing}")
        logic = slicer.util.getModuleLogic(MODULE_NAME)
        volume, brain = logic.impl.load_example()
        segmentation = logic.segment(volume, brain, segmentName="Lesion")
        self.assertEqual(segmentation.GetSegmentation().GetNthSegment(0).GetName(), "Lesion")
        logging.info("IterMask in-Slicer test passed")
