"""The worker started as inside Slicer: through Slicer's real PythonSlicer launcher (CTKAppLauncher → python-real as
its child), looked up when a worker starts, killed as a whole tree, its death reported for what it was."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slicer

from itermask import ItermaskError
from IterMaskSlicerLib.client import WorkerClient, WorkerDied, worker_interpreter
from IterMaskSlicerLib.logic import IterMaskLogic
from IterMaskSlicerLib.workflow import Workflow

from conftest import REPO
from test_slicer_logic import flair_node, poll_until, snapshot  # noqa: F401  (a fixture and helpers)

MODULE = REPO / "IterMaskSlicer"


def processes() -> dict[int, tuple[int, str, str]]:
    """Every live process: pid → (parent pid, state, command line). Zombies are dead: a zombie's parent (or init)
    only has not collected its exit status yet."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state != "Z":
                found[int(entry.name)] = (int(ppid), state, cmdline)
    return found


def worker_tree(client: WorkerClient) -> tuple[int, int]:
    """(launcher pid, python-real pid) of a running worker: the worker script's process is the launcher's child."""
    launcher = client.process.pid
    children = [pid for pid, (ppid, _, cmd) in processes().items() if ppid == launcher and "worker.py" in cmd]
    assert len(children) == 1, f"the launcher {launcher} should have one python-real child: {children}"
    return launcher, children[0]


def left_behind(folder, pids=(), within: float = 5.0) -> list[int]:
    """Live processes of a stopped worker (its folder on their command line, or one of ``pids``), once a killed
    process has had ``within`` seconds to be scheduled and die (no wait is asked of the UI: it sent SIGKILL)."""
    deadline = time.monotonic() + within
    while True:
        alive = [pid for pid, (_, _, cmd) in processes().items() if str(folder) in cmd or pid in pids]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


@pytest.fixture()
def launched(slicer_path, mrml_scene):
    logic = IterMaskLogic(mrml_scene, worker=WorkerClient())
    yield logic
    logic.close()


def test_inside_slicer_the_worker_starts_through_python_slicer_found_on_path_at_launch(slicer_path):
    """As in Slicer on Linux: sys.executable is '' when the module is imported (Slicer sets it later)."""
    script = (
        "import json, sys; sys.executable = ''; sys.path.insert(0, sys.argv[1]);"
        "from IterMaskSlicerLib.client import WorkerClient;"
        "client = WorkerClient(); reply = client.wait(client.send('example'), timeout=300);"
        "print(json.dumps({'program': client.process.args[0], 'event': reply['event'],"
        " 'shape': list(client.take_array(reply['arrays']['image']).shape)})); client.stop()")
    out = subprocess.run([sys.executable, "-c", script, str(MODULE)], capture_output=True, text=True, timeout=600,
                         env=dict(os.environ, PATH=f"{slicer_path}{os.pathsep}{os.environ['PATH']}"))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["program"] == str(slicer_path / "PythonSlicer") and result["event"] == "done"
    assert len(result["shape"]) == 3


def test_without_python_slicer_or_a_python_the_error_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "executable", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ItermaskError, match="Slicer's PythonSlicer launcher is not on PATH") as raised:
        WorkerClient().send("example")
    assert "\n" not in str(raised.value)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "SlicerApp-real"))  # Slicer on Windows, before start-up
    with pytest.raises(ItermaskError, match="not a Python"):
        worker_interpreter()


@pytest.mark.parametrize("victim", ["python-real", "launcher"])
def test_a_worker_killed_mid_run_under_the_launcher_leaves_nothing_behind(launched, flair_node, tiny_model, victim):
    logic = launched
    logic.initialize(flair_node, model=str(tiny_model))
    logic.step()
    before, folder = snapshot(logic), logic.worker.folder
    launcher, python_real = worker_tree(logic.worker)
    logic.begin("run")
    poll_until(logic, lambda: logic.state["count"] >= 2)
    os.kill(python_real if victim == "python-real" else launcher, signal.SIGKILL)
    reason = r"ended abnormally: its Python \(python-real" if victim == "python-real" else r"was killed \(signal 9\)"
    with pytest.raises(WorkerDied, match=reason):
        logic.wait()
    assert snapshot(logic) == before and not logic.ready and not logic.busy
    assert not left_behind(folder, (launcher, python_real))
    logic.initialize(flair_node, model=str(tiny_model))  # the next command starts a new worker
    logic.step()
    assert worker_tree(logic.worker)[0] != launcher and logic.state["count"] == 1


def test_closing_mid_run_stops_the_whole_tree_without_waiting_for_the_run(launched, flair_node, tiny_model):
    flow = Workflow(launched)
    flow.segment(flair_node, model=str(tiny_model))
    while flow.logic.driver.request is None or flow.logic.driver.request.command != "run":
        flow.poll()
        time.sleep(0.01)
    folder, tree = launched.worker.folder, worker_tree(launched.worker)
    flow.close()  # Slicer's scene close or exit: returns once the tree is gone, never after the run
    assert launched.worker.process is None and not left_behind(folder, tree)
    assert not flow.busy and not launched.ready and launched.outputs is None


def test_whatever_the_worker_prints_outside_the_protocol_is_kept_out_of_it(slicer_path, tmp_path):
    """A library that prints on stdout while the worker imports, and the launcher's own lines, go to the log."""
    (tmp_path / "sitecustomize.py").write_text("print('banner from a library', flush=True)\nprint('{\"not\": 1}')\n")
    client = WorkerClient()
    os.environ["PYTHONPATH"], before = str(tmp_path), os.environ.get("PYTHONPATH")
    try:
        reply = client.wait(client.send("example"), timeout=300)
        assert reply["event"] == "done" and reply["id"] == 1
        assert client.wait(client.send("no-such-command"), timeout=60)["event"] == "error"
        log = (client.folder / "worker.log").read_text()
        assert "[stdout] banner from a library" in log and '[stdout] {"not": 1}' in log
    finally:
        client.stop()
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before


def test_load_example_needs_no_torch_in_the_worker(slicer_path, tmp_path, mrml_scene):
    """A Slicer without PyTorch: the example scan still loads; Initialize then fails with the import error."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nclass NoTorch:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n            raise ModuleNotFoundError(\"No module named 'torch'\")\n"
        "sys.meta_path.insert(0, NoTorch())\n")
    popen = lambda *args, **kwargs: subprocess.Popen(  # noqa: E731
        *args, env=dict(os.environ, PYTHONPATH=str(tmp_path)), **kwargs)
    flow = Workflow(IterMaskLogic(mrml_scene, worker=WorkerClient(popen=popen)))
    try:
        flow.load_example()
        while (finished := flow.poll()) is None:
            time.sleep(0.01)
        volume, brain = flow.logic.example_nodes
        assert finished.event == "done" and flow.status == "Example loaded: press Segment."
        assert volume.GetImageData().GetDimensions() == brain.GetImageData().GetDimensions()
        assert slicer.util.arrayFromVolume(brain).any()
        flow.initialize(volume, brain)
        with pytest.raises(ItermaskError, match="No module named 'torch'"):
            while flow.poll() is None:
                time.sleep(0.01)
        assert not flow.busy and not flow.logic.ready
    finally:
        flow.close()
