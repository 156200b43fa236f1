"""The Slicer module's files and its machinery below Qt: the .ui file, metadata, the module's registration (the README
console line), the parameter names, torch-free model listing, dependency installing and readable thresholds."""
import ast
import re
import shutil
import subprocess
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import slicer

from itermask import Session, load_model
from itermask.discovery import available_models, default_model_name, read_metadata, validated_default
from IterMaskSlicerLib import dependencies, nodes, readable
from IterMaskSlicerLib.logic import default_policy, model_note

from conftest import MS, REPO

MODULE = REPO / "IterMaskSlicer"


def test_the_ui_file_defines_every_widget_the_module_uses():
    ui = ET.parse(MODULE / "Resources" / "UI" / "IterMaskSlicer.ui")
    defined = {w.get("name"): w for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "IterMaskSlicer.py").read_text()))
    assert used and used <= set(defined), f"missing in the .ui: {sorted(used - set(defined))}"
    selector = defined["inputVolumeSelector"]
    assert selector.find("property[@name='showChildNodeTypes']/bool").text == "false"  # no labelmaps as input
    advanced = defined["advancedCollapsibleButton"]
    assert advanced.find("property[@name='collapsed']/bool").text == "true"
    assert {w.get("name") for w in advanced.iter("widget")} >= {"seedSpinBox", "loadModelButton", "showPlotButton"}


def test_the_extension_metadata_is_filled_and_the_build_lists_files_that_exist():
    cmake = (MODULE / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in cmake and "slicer_add_python_unittest" in cmake
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in cmake
        assert (MODULE / resource.replace("${MODULE_NAME}", "IterMaskSlicer")).is_file()
    top = (REPO / "CMakeLists.txt").read_text()
    assert "add_subdirectory(IterMaskSlicer)" in top
    settings = dict(re.findall(r'set\((EXTENSION_\w+) "([^"]*)"\)', top))
    assert settings["EXTENSION_CONTRIBUTORS"] == "IterMaskSlicer developers"
    assert settings["EXTENSION_HOMEPAGE"].endswith("#readme")
    screenshot = settings["EXTENSION_SCREENSHOTURLS"]
    assert screenshot.endswith("IterMaskSlicer/Resources/Screenshots/slice-views.png")
    assert (REPO / "IterMaskSlicer/Resources/Screenshots/slice-views.png").is_file()
    assert "5.10" in settings["EXTENSION_DESCRIPTION"] and "Slicer 5.10 or later (Python 3.12)" in (
        REPO / "README.md").read_text()
    assert "Apache License" in (REPO / "LICENSE").read_text()


def test_models_are_listed_and_the_slicer_side_imports_without_torch():
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import itermask; "
              "from IterMaskSlicerLib import logic, client, dependencies, readable; "
              "models = itermask.available_models(); "
              "print(sorted(models), logic.default_policy('flair-3d'), logic.default_policy('flair-2d')); "
              "assert 'torch' not in sys.modules, 'torch was imported'")
    out = subprocess.run([sys.executable, "-c", script, str(MODULE)], capture_output=True, text=True, check=True)
    assert out.stdout.split("]")[1].split() == ["itermask3d", "itermask2"]
    assert "'flair-2d'" in out.stdout


def test_torch_is_checked_from_its_metadata_and_installed_with_a_minimum_version(monkeypatch):
    assert dependencies.torch_problem() is None  # the test environment's torch is recent enough
    monkeypatch.setattr(dependencies, "installed_version", lambda name: "1.13.1+cu117")
    assert dependencies.torch_problem() == "PyTorch 1.13.1+cu117 is older than the 2.1 IterMask needs"
    calls = []

    class PyTorchUtilsLogic:
        def installTorch(self, **kwargs):
            calls.append(kwargs)
            monkeypatch.setattr(dependencies, "installed_version", lambda name: "2.5.0")
            return types.SimpleNamespace(__version__="2.5.0")

    assert dependencies.install_torch(PyTorchUtilsLogic())
    assert calls == [{"askConfirmation": True, "torchVersionRequirement": ">=2.1"}]

    class Declined:  # the PyTorch extension returns None when the user says no in its own dialog
        def installTorch(self, **kwargs):
            return None

    assert dependencies.install_torch(Declined()) is False

    def offline(name):
        raise OSError("Could not fetch URL https://pypi.org/simple/torch/")

    with pytest.raises(RuntimeError, match="without internet access"):
        dependencies.install_torch(None, pip_install=offline)


def test_thresholds_are_stated_against_the_healthy_calibration():
    calibration = {"tau": 1.0, "tau_percentile": 80.0, "threshold": 20.0, "threshold_percentile": 99.0}
    policy = {"kind": "policy", "value": 20.0, "anomaly": "squared", "source": "calibrated on healthy scans"}
    assert readable.threshold_text(20.0, policy, calibration)[0] == "calibrated: flags about 1 % of healthy voxels"
    label, tooltip = readable.threshold_text(30.0, policy, calibration)
    assert label == "1.50 × calibrated: fewer than 1 % of healthy voxels flagged" and "Raw threshold 30" in tooltip
    # IterMask3D: this scan's τ_stop is the default, and the slider's reference, once the path has found it.
    assert readable.reference_value(policy, tau_stop=1.25) == 1.25
    label, tooltip = readable.threshold_text(1.25, policy, calibration, tau_stop=1.25)
    assert label == "1.00 × τ_stop: this scan's own threshold (IterMask3D)" and "0.06 × the calibrated 20, the 99th percentile" in tooltip
    label = readable.threshold_text(2.5, policy, calibration, tau_stop=1.25)[0]
    assert label == "2.00 × τ_stop (fewer voxels flagged)"
    assert readable.tau_text(2.0, calibration)[0] == "2.00 × calibrated τ"
    by_hand = {"tau": 1.0, "tau_percentile": None, "threshold": 20.0, "threshold_percentile": None}
    label, tooltip = readable.threshold_text(30.0, policy, by_hand)
    assert label == "1.50 × calibrated" and "percentile" not in tooltip
    assert "percentile" not in readable.tau_text(1.0, by_hand)[1]


def test_a_validated_rule_is_the_default_its_words_name_and_the_healthy_percentile_is_not_claimed(ms_flair):
    """The shipped flair-3d bundle records the hyperintense map at a threshold chosen on validation scans: that is the
    session's default and the words' reference, whatever the policy's τ_stop; the healthy calibration (of the squared
    error map) is not claimed for it."""
    image, affine, brain = ms_flair
    session = Session(load_model("flair-3d"), image, affine, brain, device="cpu")
    reference = readable.threshold_reference(session)
    rule = session.rule.as_dict()
    assert reference == {"kind": "rule", "value": rule["threshold"], "anomaly": "hyperintense",
                         "source": rule["source"]}
    assert readable.reference_value(reference, tau_stop=1.5) == session.threshold == rule["threshold"]
    calibration = {"threshold": session.model.calibration.threshold, "threshold_percentile": 99.0}
    label, tooltip = readable.threshold_text(session.threshold, reference, calibration, tau_stop=1.5)
    assert label == "1.00 × default: chosen on the validation split for the hyperintense map"
    assert f"Raw threshold {session.threshold:.4g} on the hyperintense map" in tooltip and rule["source"] in tooltip
    assert "percentile" not in label + tooltip and "calibrated" not in label + tooltip
    assert [readable.threshold_text(session.threshold * ratio, reference, calibration)[0] for ratio in (1.5, 0.5)] == [
        "1.50 × default (fewer voxels flagged)", "0.50 × default (more voxels flagged)"]
    # The same bundle under IterMask²: no rule recorded for it, the policy's own threshold and words.
    session = Session(load_model("flair-3d"), image, affine, brain, policy="itermask2", device="cpu")
    reference = readable.threshold_reference(session)
    assert reference["kind"] == "policy" and reference["value"] == session.threshold


def parameter_fields() -> dict[str, str]:
    """The fields of the widget's parameterNodeWrapper class and their annotations, read from the module's source."""
    tree = ast.parse((MODULE / "IterMaskSlicer.py").read_text())
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "IterMaskSlicerParameterNode")
    return {n.target.id: ast.unparse(n.annotation) for n in wrapper.body if isinstance(n, ast.AnnAssign)}


def union_members(annotation: str) -> list[str]:
    """``"Union[A, B, None]"`` → ``["A", "B", "None"]``."""
    return [m.strip() for m in annotation.removeprefix("Union[").removesuffix("]").split(",")]


class FakeComboBox:
    def __init__(self):
        self.items, self.currentIndex = [], -1

    currentData = property(lambda self: self.items[self.currentIndex][1] if self.currentIndex >= 0 else None)
    addItem = lambda self, text, data: self.items.append((text, data))  # noqa: E731
    clear = lambda self: self.items.clear()  # noqa: E731
    findData = lambda self, data: next((i for i, (_, d) in enumerate(self.items) if d == data), -1)  # noqa: E731
    findText = lambda self, text: next((i for i, (t, _) in enumerate(self.items) if t == text), -1)  # noqa: E731

    def setCurrentIndex(self, index):
        self.currentIndex = index

    def blockSignals(self, blocked):
        pass

    def connect(self, signal, slot):
        pass


@pytest.fixture()
def slicer_application(monkeypatch, mrml_scene):
    """Slicer's module registration, emulated around the real module file: the Qt-side pieces (qt, the scripted
    module base classes, parameterNodeWrapper, the module manager) are stand-ins; the MRML scene, slicer.util and
    the worker process are real."""
    base = types.ModuleType("slicer.ScriptedLoadableModule")

    class Module:
        def __init__(self, parent):
            self.parent = parent

    class Widget:
        def __init__(self, parent=None):
            self.parent, self.layout = parent, mock.MagicMock()

        def setup(self):
            pass

        def resourcePath(self, name):
            return str(MODULE / "Resources" / name)

    class Logic:
        def __init__(self):
            pass

    base.ScriptedLoadableModule, base.ScriptedLoadableModuleWidget = Module, Widget
    base.ScriptedLoadableModuleLogic, base.ScriptedLoadableModuleTest = Logic, unittest.TestCase
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    # The wrapped parameter node: its declared fields with their defaults (the Qt-side GUI connection is a no-op).
    wrapper.parameterNodeWrapper = lambda cls: (lambda node: types.SimpleNamespace(
        **{name: getattr(cls, name, None) for name in cls.__annotations__},
        connectGui=lambda ui: "tag", disconnectGui=lambda tag: None))
    wrapper.Choice = wrapper.WithinRange = lambda *bounds: "validator"
    for name, module in (("qt", mock.MagicMock()), ("slicer.ScriptedLoadableModule", base),
                         ("slicer.parameterNodeWrapper", wrapper)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.syspath_prepend(str(MODULE))
    monkeypatch.delitem(sys.modules, "IterMaskSlicer", raising=False)
    import IterMaskSlicer as module_file

    class ScriptedModule:  # qSlicerScriptedLoadableModule: instantiates <Name> and, on demand, <Name>Widget
        def __init__(self, name):
            self.name, self.parent = name, types.SimpleNamespace(isEntered=False)
            getattr(module_file, name)(self.parent)
            self.widget = None

        def widgetRepresentation(self):
            if self.widget is None:
                self.widget = WidgetRepresentation(getattr(module_file, self.name + "Widget")(self.parent))
                self.widget.self().setup()
            return self.widget

    class WidgetRepresentation:
        def __init__(self, python_widget):
            self.self = lambda: python_widget

    ui = types.SimpleNamespace(modelComboBox=FakeComboBox(), policyComboBox=FakeComboBox(),
                               applySourceComboBox=FakeComboBox())
    modules = {}
    environment = types.SimpleNamespace(keys=lambda: list(__import__("os").environ),
                                        value=lambda key: __import__("os").environ[key])
    startup_slots = []  # what the module asked to run once Slicer's start-up has completed
    app = types.SimpleNamespace(moduleManager=lambda: types.SimpleNamespace(module=modules.get),
                                startupEnvironment=lambda: environment, processEvents=lambda: None,
                                connect=lambda signal, slot: startup_slots.append((signal, slot)))
    monkeypatch.setattr(slicer, "app", app, raising=False)
    monkeypatch.setattr(slicer, "qSlicerScriptedLoadableModule", ScriptedModule, raising=False)
    monkeypatch.setattr(slicer, "qSlicerScriptedLoadableModuleWidget", WidgetRepresentation, raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: mock.MagicMock())
    monkeypatch.setattr(slicer.util, "childWidgetVariables",
                        lambda widget: mock.MagicMock(**{k: v for k, v in vars(ui).items()}))
    modules["IterMaskSlicer"] = ScriptedModule("IterMaskSlicer")
    modules["IterMaskSlicer"].startup_slots = startup_slots
    yield modules["IterMaskSlicer"]
    widget = modules["IterMaskSlicer"].widget
    if widget is not None:
        widget.self().logic.impl.close()


def test_the_readme_console_line_runs_against_the_module_registration(slicer_application, tiny_model_3d, tmp_path,
                                                                      monkeypatch, mrml_scene, slicer_path):
    line = next(l.strip() for l in (REPO / "README.md").read_text().splitlines()
                if "slicer.util.getModuleLogic(\"IterMaskSlicer\")" in l)
    default = default_model_name("FLAIR")  # the CLI's FLAIR default (defaults.json) is the module's too
    shutil.copy(tiny_model_3d, tmp_path / f"{default}.pt")  # a small stand-in under the default's name
    monkeypatch.setenv("ITERMASK_MODEL_PATH", str(tmp_path))
    from itermask.io import read_volume

    image, affine = read_volume(MS / "FLAIR.nii.gz")
    flair = slicer.util.addVolumeFromArray(np.ascontiguousarray(image.astype(np.float32).transpose(2, 1, 0)), affine,
                                           name="FLAIR")
    namespace = {"slicer": slicer}
    exec(line, namespace)
    segmentation = namespace["segmentation"]
    assert segmentation.IsA("vtkMRMLSegmentationNode") and nodes.mask_array(segmentation, flair).any()
    widget = slicer_application.widget.self()
    assert widget.ui.modelComboBox.currentData == default
    assert widget.ui.policyComboBox.currentData == default_policy(default)  # the default model's own policy


def test_the_example_is_in_sample_data_and_its_loader_downloads_nothing(slicer_application, monkeypatch, mrml_scene,
                                                                          slicer_path):
    registered = []
    sample_data = types.ModuleType("SampleData")
    sample_data.SampleDataLogic = types.SimpleNamespace(
        registerCustomSampleDataSource=lambda **source: registered.append(source))
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kwargs: None)  # Qt slice views
    [(signal, register)] = slicer_application.startup_slots
    assert signal == "startupCompleted()"
    register()
    [source] = registered
    assert source["category"] == "IterMask" and source["uris"] == [] and Path(source["thumbnailFileName"]).is_file()
    volume, brain = source["customDownloader"](types.SimpleNamespace(**source))
    assert slicer.util.arrayFromVolume(volume).any() and slicer.util.arrayFromVolume(brain).any()
    assert volume.GetScene() is mrml_scene and brain.IsA("vtkMRMLLabelMapVolumeNode")


def test_choosing_a_model_says_what_the_validation_found_for_its_sequence():
    """Where a sequence has no validated model the module says so, as the CLI does, instead of a silent default."""
    for name, path in available_models().items():
        modality = read_metadata(path).modality
        chosen, line = validated_default(modality)
        if chosen is None:
            assert model_note(name) == line and line.startswith(f"no validated model for {modality}")
        elif chosen == name:
            assert model_note(name) == line and "the validated default" in line
        else:
            assert model_note(name) == f"{name}: not the validated default for {modality} (that is {chosen})"
