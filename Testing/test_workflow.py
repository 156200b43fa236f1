"""What the module's buttons do (IterMaskSlicerLib.workflow), on a real MRML scene with a real worker started through
Slicer's PythonSlicer launcher: Segment's chain, Cancel, the roll-back after a failure, Continue from an edited
result, the applied result's lifetime, and the iteration slider's seeks."""
import time

import numpy as np
import pytest

from itermask import ItermaskError
from IterMaskSlicerLib import nodes
from IterMaskSlicerLib.logic import IterMaskLogic
from IterMaskSlicerLib.workflow import Finished, Workflow

from test_slicer_logic import flair_node, shown, snapshot, worker  # noqa: F401  (fixtures and helpers)


@pytest.fixture()
def flow(mrml_scene, worker):
    flow = Workflow(IterMaskLogic(mrml_scene, worker=worker))
    yield flow
    flow.logic.reset()


def finish(flow: Workflow, until=None) -> list[Finished]:
    """Poll as the widget's timer does until the action has ended (or ``until()`` holds); every Finished seen."""
    ended = []
    while flow.busy and not (until is not None and until()):
        if (finished := flow.poll()) is not None:
            ended.append(finished)
        time.sleep(0.005)
    return ended


def test_segment_initializes_and_runs_to_convergence_in_one_action(flow, flair_node, tiny_model):
    flow.segment(flair_node, model=str(tiny_model))
    assert flow.busy and flow.can_cancel and flow.status == "Working…"
    assert finish(flow) == [Finished("segment", "done")]
    state = flow.logic.state
    assert state["converged"] and state["position"] == state["count"] - 1 >= 1
    assert flow.status.startswith(f"Iteration {state['position']} ") and flow.status.endswith("Converged.")


def test_cancel_during_segments_initialize_drops_the_run_that_was_queued(flow, flair_node, tiny_model):
    flow.segment(flair_node, model=str(tiny_model))
    flow.cancel()
    assert finish(flow) == [Finished("segment", "cancelled")]
    assert flow.logic.ready and flow.logic.state["count"] == 0  # initialized, no step taken
    assert flow.status == "Cancelled. Ready: press Step or Run to convergence."


def test_cancel_stops_a_run_and_is_off_where_it_cannot_act(flow, flair_node, tiny_model):
    flow.initialize(flair_node, model=str(tiny_model), policy="itermask3d")  # a long path: cannot end first
    finish(flow)
    flow.step()
    assert not flow.can_cancel  # a single step cannot be stopped part way: Cancel is off
    finish(flow)
    before = snapshot(flow.logic)
    flow.run()
    finish(flow, until=lambda: flow.logic.state["count"] >= 3)
    flow.cancel()
    assert finish(flow) == [Finished("run", "cancelled")]
    assert snapshot(flow.logic) == before and flow.status == "Cancelled: the scene is as before the run."


def test_a_failure_drops_what_was_queued_and_changes_nothing(flow, flair_node, tmp_path, mrml_scene):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a bundle")
    flow.logic.parameter_node()  # the module's parameter node exists before any action, as in Slicer
    ids = nodes.node_ids(mrml_scene)
    with pytest.raises(ItermaskError, match="broken.pt is not a readable IterMask model bundle"):
        flow.segment(flair_node, model=str(broken))  # refused before anything is sent
    assert not flow.busy
    flow.segment(flair_node, model=str(broken), policy="itermask2")  # the worker is the first to read it
    assert flow.queue  # the run waits behind the initialize that will fail
    with pytest.raises(ItermaskError, match="broken.pt"):
        finish(flow)
    assert not flow.busy and not flow.queue and not flow.logic.ready
    assert flow.status == "Failed: the scene is as before." and nodes.node_ids(mrml_scene) == ids
    assert flow.poll() is None  # the failure is raised once


def test_continue_takes_one_step_from_the_edited_result(flow, flair_node, tiny_model):
    flow.initialize(flair_node, model=str(tiny_model))
    finish(flow)
    flow.step()
    finish(flow)
    with pytest.raises(ItermaskError, match="apply a result first"):
        flow.continue_from_result()
    result = flow.apply("Lesion")
    nodes.set_segment_voxels(result, flair_node.blob, flair_node)  # the clinician's edit
    flow.continue_from_result()
    assert finish(flow) == [Finished("continue", "done")]
    state = flow.logic.state
    assert state["count"] == 2 and state["position"] == 1 and state["iteration"]["phase"] == "edited"


def test_the_applied_result_is_forgotten_when_its_session_or_node_goes(flow, flair_node, tiny_model, mrml_scene):
    def stepped_and_applied():
        flow.initialize(flair_node, model=str(tiny_model))
        finish(flow)
        flow.step()
        finish(flow)
        return flow.apply("Lesion")

    result = stepped_and_applied()
    assert flow.result is result
    mrml_scene.RemoveNode(result)
    assert flow.result is None
    stepped_and_applied()
    flow.reset()
    assert flow.result is None
    stepped_and_applied()
    flow.initialize(flair_node, model=str(tiny_model))  # a new session
    assert flow.result is None
    finish(flow)


def test_dragging_the_iteration_slider_sends_one_seek_at_a_time_and_ends_where_it_stopped(flow, flair_node,
                                                                                       tiny_model):
    flow.initialize(flair_node, model=str(tiny_model))
    finish(flow)
    for _ in range(3):
        flow.step()
        finish(flow)
    sent = flow.logic.worker._next_id
    flow.seek(0)
    for index in (1, 0, 1):  # the slider moves on while the first seek is in flight
        flow.seek(index)
    assert finish(flow) == [Finished("seek", "done")]
    assert flow.logic.worker._next_id - sent == 2 and flow.logic.state["position"] == 1
    assert np.array_equal(shown(flow.logic.outputs.mask), flow.logic.iteration_mask(1))
