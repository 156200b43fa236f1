"""The module as an installed extension has it: only the files its CMake lists name, copied the way Slicer's
slicerMacroBuildScriptedModule copies them (CMake evaluates the real CMakeLists.txt). Model discovery, each
sequence's default and Load example must work from that copy exactly as from the source checkout."""
import json
import subprocess
import sys

import pytest

from itermask.metadata import MODALITIES

from conftest import REPO

MODULE = REPO / "IterMaskSlicer"

# Run with only the installed copy importable: no source checkout, and no pip-installed itermask_models package
# (Slicer has none), so whatever the module reads must have come from its CMake lists.
DEFAULTS = """
import json, sys
sys.modules["itermask_models"] = None
sys.path.insert(0, sys.argv[1])
from itermask.discovery import available_models, default_model_name
from IterMaskSlicerLib.logic import default_model, default_policy
print(json.dumps({"models": {name: str(path) for name, path in available_models().items()},
                  "defaults": {m: default_model_name(m) for m in sys.argv[2:]},
                  "module": [default_model(), default_policy(default_model())]}))
"""
EXAMPLE = """
import sys
sys.modules["itermask_models"] = None
sys.path.insert(0, sys.argv[1])
from IterMaskSlicerLib.client import WorkerClient
client = WorkerClient(python=sys.executable)
reply = client.wait(client.send("example"), timeout=300)
print(reply["event"], client.take_array(reply["arrays"]["image"]).shape, client.process.args[1])
client.stop()
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    destination = tmp_path_factory.mktemp("qt-scripted-modules")
    subprocess.run(["cmake", f"-DDESTINATION={destination}", "-P", str(REPO / "Testing" / "install_module.cmake")],
                   cwd=MODULE, check=True, capture_output=True)
    return destination


def read_defaults(folder):
    out = subprocess.run([sys.executable, "-c", DEFAULTS, str(folder), *MODALITIES], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_the_installed_module_finds_every_model_and_the_same_defaults(installed):
    from_install, from_source = read_defaults(installed), read_defaults(MODULE)
    assert set(from_install["models"]) == set(from_source["models"]) and from_install["models"]
    assert all(path.startswith(str(installed)) for path in from_install["models"].values())
    assert from_install["defaults"] == from_source["defaults"] and from_install["module"] == from_source["module"]
    assert (installed / "Resources" / "Models" / "defaults.json").is_file()


def test_load_example_runs_from_the_installed_copy(installed):
    out = subprocess.run([sys.executable, "-c", EXAMPLE, str(installed)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    event, *shape, worker = out.stdout.split()
    assert event == "done" and worker.startswith(str(installed))
