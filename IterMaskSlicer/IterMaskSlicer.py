"""IterMaskSlicer: unsupervised brain-lesion segmentation (IterMask) as a 3D Slicer module.

This file holds only the Slicer classes; the work happens in IterMaskSlicerLib (MRML logic, no Qt) and itermask
(the numpy + torch core). Both are imported lazily, so the module loads even before torch is installed.
"""
import logging
import os

import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

POLICIES = (("IterMask² (calibrated τ)", "itermask2"), ("IterMask3D (subject-specific τ)", "itermask3d"))


class IterMaskSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        parent.title = "IterMask"
        parent.categories = ["Segmentation"]
        parent.contributors = ["IterMaskSlicer developers"]
        parent.helpText = (
            "Segments what a network trained only on healthy brains cannot reconstruct: tumours, strokes, MS lesions, "
            "artifacts. Initialize, step through the shrinking mask, raise τ to shrink further, pick the iteration that "
            "looks right, preview the segmentation threshold, Apply, and edit the result in the Segment Editor.")
        parent.acknowledgementText = (
            "Implements IterMask² (Liang et al., MICCAI 2024) and IterMask3D. The default FLAIR model was trained on "
            "BraTS 2013 (CC BY-NC-SA 3.0) and Lesjak et al. 2018 MS data (CC BY).")


def ensureDependencies():
    """Ask before installing torch (PyTorch extension's installer when present); False if the user declines."""
    from IterMaskSlicerLib.dependencies import install, missing_packages

    missing = missing_packages()
    if not missing:
        return True
    if not slicer.util.confirmOkCancelDisplay(
            f"IterMask needs these Python packages: {', '.join(missing)}. Install them now? This can take minutes."):
        return False
    torchInstaller = None
    try:
        import PyTorchUtils

        torchInstaller = lambda: PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False)  # noqa: E731
    except ImportError:
        pass
    with slicer.util.WaitCursor():
        install(missing, slicer.util.pip_install, torchInstaller)
    return True


class IterMaskSlicerLogic(ScriptedLoadableModuleLogic):
    """``slicer.modules.itermaskslicer.logic()``: the MRML logic of IterMaskSlicerLib behind a lazy import."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._impl = None

    @property
    def ready(self):
        """A session is open (without importing anything)."""
        return self._impl is not None and self._impl.session is not None

    @property
    def impl(self):
        if self._impl is None:
            if not ensureDependencies():
                raise RuntimeError("IterMask needs torch; installation was declined")
            from IterMaskSlicerLib.logic import IterMaskLogic

            self._impl = IterMaskLogic(slicer.mrmlScene)
        return self._impl

    def segment(self, volumeNode, brainMaskNode=None, model="flair-2d", policy="itermask2", seed=0,
                segmentName="Anomaly"):
        """One call from a volume node to a segmentation node (for the Python console and batch loops)."""
        return self.impl.segment(volumeNode, brainMaskNode, model=model, policy=policy, seed=seed,
                                 segment_name=segmentName)


class IterMaskSlicerWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/IterMaskSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = IterMaskSlicerLogic()
        self.run = None
        self.timer = qt.QTimer()
        self.timer.setInterval(100)
        self.timer.connect("timeout()", self.onPoll)
        for label, policy in POLICIES:
            self.ui.policyComboBox.addItem(label, policy)
        self.refreshModels()
        self.ui.loadModelButton.connect("clicked()", self.onLoadModel)
        self.ui.initializeButton.connect("clicked()", self.onInitialize)
        self.ui.stepButton.connect("clicked()", lambda: self.startRun(1))
        self.ui.runButton.connect("clicked()", lambda: self.startRun(None))
        self.ui.backButton.connect("clicked()", self.onBack)
        self.ui.cancelButton.connect("clicked()", self.onCancel)
        self.ui.resetButton.connect("clicked()", self.onReset)
        self.ui.iterationSlider.connect("valueChanged(double)", self.onIterationSlider)
        self.ui.tauSlider.connect("valueChanged(double)", self.onTau)
        self.ui.thresholdSlider.connect("valueChanged(double)", self.onThreshold)
        self.ui.showAnomalyMapCheckBox.connect("toggled(bool)", self.onShowAnomalyMap)
        self.ui.showPlotButton.connect("clicked()", self.onShowPlot)
        self.ui.applyButton.connect("clicked()", self.onApply)
        self.ui.continueFromSegmentationButton.connect("clicked()", self.onContinue)

    def cleanup(self):
        self.timer.stop()

    # --- models ---------------------------------------------------------------------------------------------------
    def refreshModels(self, select=None):
        self.ui.modelComboBox.clear()
        try:
            import itermask

            for name, path in itermask.available_models().items():
                self.ui.modelComboBox.addItem(name, str(path))
        except ImportError:
            self.ui.modelComboBox.addItem("flair-2d", "flair-2d")  # resolved after torch is installed
        if select:
            self.ui.modelComboBox.addItem(os.path.basename(select), select)
            self.ui.modelComboBox.setCurrentIndex(self.ui.modelComboBox.count - 1)

    def onLoadModel(self):
        path = qt.QFileDialog.getOpenFileName(None, "IterMask model bundle", "", "IterMask bundles (*.pt)")
        if path:
            self.refreshModels(select=path)

    # --- actions ----------------------------------------------------------------------------------------------------
    @property
    def impl(self):
        return self.logic.impl

    def onInitialize(self):
        with slicer.util.tryWithErrorDisplay("IterMask could not start.", waitCursor=True):
            self.impl.initialize(self.ui.inputVolumeSelector.currentNode(), self.ui.brainMaskSelector.currentNode(),
                                 model=self.ui.modelComboBox.currentData,
                                 policy=self.ui.policyComboBox.currentData, seed=self.ui.seedSpinBox.value)
            self.impl.show_in_slice_views(self.ui.showAnomalyMapCheckBox.checked)
            session = self.impl.session
            for slider, value in ((self.ui.tauSlider, session.tau), (self.ui.thresholdSlider, session.threshold)):
                self.setQuietly(slider, value, maximum=max(value * 5, 1.0))
            self.updateButtons()
            self.ui.statusLabel.text = "Ready: press Step or Run to convergence."

    def startRun(self, maxSteps):
        from IterMaskSlicerLib.background import BackgroundRun

        self.run = BackgroundRun(self.impl, maxSteps)
        self.ui.progressBar.visible = True
        self.ui.progressBar.maximum = 0 if maxSteps is None else maxSteps  # 0: busy indicator
        self.updateButtons()
        self.timer.start()

    def onPoll(self):
        from IterMaskSlicerLib import background

        state = self.run.poll()
        self.showIteration()
        if state == background.RUNNING:
            return
        self.timer.stop()
        self.ui.progressBar.visible = False
        if state == background.FAILED:
            slicer.util.errorDisplay(f"IterMask step failed: {self.run.error}")
        self.ui.statusLabel.text = {background.DONE: "Converged." if self.impl.session.converged else "Stepped.",
                                    background.CANCELLED: "Cancelled: nothing was changed.",
                                    background.FAILED: "Failed: nothing was changed."}[state]
        self.run = None
        self.updateButtons()

    def onCancel(self):
        if self.run is not None:
            self.run.cancel()
            self.ui.statusLabel.text = "Cancelling after the current step…"

    def onBack(self):
        self.impl.back()
        self.showIteration()

    def onReset(self):
        self.impl.reset()
        self.updateButtons()

    def onIterationSlider(self, value):
        if self.run is None and self.impl.session and int(value) != self.impl.session.position:
            self.impl.seek(int(value))
            self.showIteration()

    def onTau(self, value):
        if self.impl.session and abs(value - self.impl.session.tau) > 1e-9:
            self.impl.set_tau(value)

    def onThreshold(self, value):
        if self.impl.session and self.impl.session.current is not None:
            self.impl.preview_threshold(value)

    def onShowAnomalyMap(self, checked):
        if self.impl.session:
            self.impl.show_in_slice_views(checked)

    def onShowPlot(self):
        if self.impl.session:
            slicer.modules.plots.logic().ShowChartInLayout(self.impl.outputs["plot"].chart)

    def onApply(self):
        with slicer.util.tryWithErrorDisplay("Could not create the segmentation.", waitCursor=True):
            self.applied = self.impl.apply(self.ui.segmentNameLineEdit.text or "Anomaly")
            self.ui.continueFromSegmentationButton.enabled = True
            self.ui.statusLabel.text = f"Created {self.applied.GetName()}: edit it in the Segment Editor if needed."

    def onContinue(self):
        self.impl.continue_from_segmentation(self.applied)
        self.startRun(1)

    # --- state ------------------------------------------------------------------------------------------------------
    def showIteration(self):
        session = self.impl.session
        if session is None or session.current is None:
            return
        self.setQuietly(self.ui.iterationSlider, session.position, maximum=max(len(session.iterations) - 1, 0))
        stop = session.policy.describe(session).get("tau_stop")
        self.ui.tauStopLabel.text = "—" if stop is None else f"{stop:.3f}"
        for slider, value in ((self.ui.tauSlider, session.tau), (self.ui.thresholdSlider, session.threshold)):
            self.setQuietly(slider, value, maximum=max(slider.maximum, value))
        it = session.current
        self.ui.statusLabel.text = (f"Iteration {it.index} ({it.phase}): mask {100 * it.mask.sum().item() / session.brain_voxels:.1f}% "
                                    f"of the brain, {it.seconds:.1f} s")

    @staticmethod
    def setQuietly(slider, value, maximum):
        """Show a value the session chose without it coming back as a user's change."""
        slider.blockSignals(True)
        slider.maximum = maximum
        slider.value = value
        slider.blockSignals(False)

    def updateButtons(self):
        ready = self.logic.ready
        idle = self.run is None
        for button in (self.ui.stepButton, self.ui.runButton, self.ui.backButton, self.ui.resetButton,
                       self.ui.applyButton):
            button.enabled = ready and idle
        self.ui.initializeButton.enabled = idle
        self.ui.cancelButton.enabled = not idle


class IterMaskSlicerTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode → Reload and Test). CI cannot run it: it has no Slicer application."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_step_apply_and_geometry()

    def test_step_apply_and_geometry(self):
        import numpy as np

        # A synthetic skull-stripped "brain" (ellipsoid with texture) with a bright blob, on an oblique grid.
        shape = (60, 70, 60)
        k, j, i = np.indices(shape)
        brain = ((i - 30) / 26.0) ** 2 + ((j - 35) / 31.0) ** 2 + ((k - 30) / 24.0) ** 2 < 1
        rng = np.random.default_rng(0)
        image = np.where(brain, 100 + 10 * np.sin(i / 3.0) * np.cos(j / 4.0) + rng.normal(0, 3, shape), 0)
        blob = brain & (((i - 38) ** 2 + (j - 30) ** 2 + (k - 30) ** 2) < 36)
        image[blob] = 180
        ijkToRas = np.array([[-2.0, 0.2, 0, 60], [0.2, -2.0, 0, 70], [0, 0, 2.2, -50], [0, 0, 0, 1]])
        volume = slicer.util.addVolumeFromArray(image.astype(np.float32), ijkToRas, name="IterMaskTest")
        logic = IterMaskSlicerLogic().impl
        logic.initialize(volume)
        first = logic.step()
        second = logic.step()
        self.assertLess(second.mask.sum().item(), first.mask.sum().item())
        self.assertTrue(logic.run())
        segmentation = logic.apply("Lesion")
        mask = slicer.util.arrayFromVolume(logic.outputs["mask"])
        self.assertEqual(mask.shape, image.shape)
        self.assertEqual(segmentation.GetSegmentation().GetNthSegment(0).GetName(), "Lesion")
        self.assertEqual(logic.outputs["sequence"].GetNumberOfDataNodes(), len(logic.session.iterations))
        logging.info("IterMask in-Slicer test passed")
