"""The Slicer module's files and its non-Qt machinery: the .ui file, background stepping, dependency installing."""
import re
import time
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import slicer

from itermask import ModelBundle
from IterMaskSlicerLib import background, dependencies, nodes
from IterMaskSlicerLib.logic import IterMaskLogic

from conftest import MS, REPO

MODULE = REPO / "IterMaskSlicer"


def test_the_ui_file_defines_every_widget_the_module_uses():
    ui = ET.parse(MODULE / "Resources" / "UI" / "IterMaskSlicer.ui")
    defined = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE / "IterMaskSlicer.py").read_text()))
    assert used and used <= defined, f"missing in the .ui: {sorted(used - defined)}"


def test_the_module_build_lists_files_that_exist():
    cmake = (MODULE / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule" in cmake and "slicer_add_python_unittest" in cmake
    for resource in ("Resources/Icons/${MODULE_NAME}.png", "Resources/UI/${MODULE_NAME}.ui"):
        assert resource in cmake
        assert (MODULE / resource.replace("${MODULE_NAME}", "IterMaskSlicer")).is_file()
    assert "add_subdirectory(IterMaskSlicer)" in (REPO / "CMakeLists.txt").read_text()


@pytest.fixture()
def flair(mrml_scene):
    from itermask.io import read_volume

    image, affine = read_volume(MS / "FLAIR.nii.gz")
    return slicer.util.addVolumeFromArray(np.ascontiguousarray(image.astype(np.float32).transpose(2, 1, 0)), affine)


def poll_until_finished(run, timeout=300):
    start = time.time()
    while run.poll() == background.RUNNING:
        assert time.time() - start < timeout
        time.sleep(0.02)
    return run.state


def test_a_background_run_reaches_what_a_direct_run_reaches(mrml_scene, flair, tiny_model):
    bundle = ModelBundle.load(tiny_model)
    direct = IterMaskLogic(mrml_scene, load_model=ModelBundle.load)
    direct.initialize(flair, model=bundle)
    direct.run()
    expected = direct.anomaly_map().copy()
    threaded = IterMaskLogic(mrml_scene, load_model=ModelBundle.load)
    threaded.initialize(flair, model=bundle)
    assert poll_until_finished(background.BackgroundRun(threaded)) == background.DONE
    assert threaded.session.converged
    assert np.array_equal(threaded.anomaly_map(), expected)
    assert threaded.outputs["sequence"].GetNumberOfDataNodes() == len(threaded.session.iterations)


def test_cancelling_a_background_run_undoes_it(mrml_scene, flair, tiny_model):
    logic = IterMaskLogic(mrml_scene, load_model=ModelBundle.load)
    logic.initialize(flair, model=str(tiny_model))
    logic.step()
    ids = nodes.node_ids(mrml_scene)
    run = background.BackgroundRun(logic)
    while run.steps_done < 1:  # let one step land, then cancel during the next
        run.poll()
        time.sleep(0.01)
    run.cancel()
    assert poll_until_finished(run) == background.CANCELLED
    assert len(logic.session.iterations) == 1 and nodes.node_ids(mrml_scene) == ids
    assert logic.outputs["sequence"].GetNumberOfDataNodes() == 1


def test_missing_packages_are_found_and_install_errors_are_explained():
    assert dependencies.missing_packages(("numpy", "no_such_package_itermask")) == ["no_such_package_itermask"]

    def offline(name):
        raise OSError("Could not fetch URL https://pypi.org/simple/torch/")

    with pytest.raises(RuntimeError, match="without internet access"):
        dependencies.install(["no_such_package_itermask"], pip_install=offline)
    installed = []
    dependencies.install(["numpy"], pip_install=installed.append)  # already importable: passes the final check
    assert installed == ["numpy"]
