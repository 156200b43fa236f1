"""The Slicer glue on a real slicer-core MRML scene, driving a real worker process: nodes, geometry, sequence, plot,
parameters, preview = Apply, cancel, a killed worker, export."""
import hashlib
import os
import signal
import time

import numpy as np
import pytest
import slicer
import torch
import slicerio

from itermask import ItermaskError, ModelBundle, Session, load_model
from itermask.geometry import resample_onto
from itermask.cli import main
from itermask.io import read_volume, write_nifti
from itermask.metadata import BundleMetadata
from IterMaskSlicerLib import nodes, panel
from IterMaskSlicerLib.caches import InputGridCache
from IterMaskSlicerLib.client import WorkerClient, WorkerDied
from IterMaskSlicerLib.logic import IterMaskLogic
from IterMaskSlicerLib.sampling import BrainVoxels, MaskSampler

from conftest import MS, insert_blob
from test_slicer_module import parameter_fields, union_members


def oblique(affine, degrees=12.0):
    t = np.deg2rad(degrees)
    rot = np.array([[np.cos(t), 0, np.sin(t), 0], [0, 1, 0, 0], [-np.sin(t), 0, np.cos(t), 0], [0, 0, 0, 1]])
    return rot @ affine


@pytest.fixture()
def flair_node(mrml_scene):
    """The MS FLAIR (with an inserted bright lesion) as a scalar volume node with an oblique IJK→RAS matrix."""
    image, affine = read_volume(MS / "FLAIR.nii.gz")
    image = image.astype(np.float32)
    image, blob = insert_blob(image, image != 0, affine, (30.0, -20.0, 20.0), 14.0)
    node = slicer.util.addVolumeFromArray(np.ascontiguousarray(image.transpose(2, 1, 0)), oblique(affine), name="FLAIR")
    node.blob, node.image, node.affine = blob, image, oblique(affine)
    return node


@pytest.fixture(scope="module")
def worker(slicer_path):
    """One worker process for the module's tests (it keeps loaded models, like the one Slicer keeps), started as
    inside Slicer: through Slicer's PythonSlicer launcher found on PATH."""
    client = WorkerClient()
    yield client
    client.stop()


@pytest.fixture()
def logic(mrml_scene, worker):
    logic = IterMaskLogic(mrml_scene, worker=worker)
    yield logic
    logic.reset()


def checksum(node):
    return hashlib.sha1(slicer.util.arrayFromVolume(node).tobytes()).hexdigest()


def same_geometry(a, b):
    return np.allclose(nodes.ijk_to_ras(a), nodes.ijk_to_ras(b)) and \
        a.GetImageData().GetDimensions() == b.GetImageData().GetDimensions()


def shown(node):
    return slicer.util.arrayFromVolume(node).transpose(2, 1, 0).astype(bool)


def snapshot(logic):
    """Everything a run may change in the scene: node ids, shown mask and map, preview, sequence length, plot."""
    return (nodes.node_ids(logic.scene), checksum(logic.outputs.mask), checksum(logic.outputs.anomaly_map),
            nodes.mask_array(logic.outputs.preview, logic.volume).tobytes(),
            logic.outputs.sequence.GetNumberOfDataNodes(), logic.outputs.plot.table.GetTable().GetNumberOfRows())


def poll_until(logic, condition, timeout=300):
    start = time.time()
    while not condition():
        assert logic.poll() is None or condition(), "the command ended before the condition held"
        assert time.time() - start < timeout
        time.sleep(0.01)


def test_the_worker_reaches_what_a_session_in_this_process_reaches(logic, flair_node, tiny_model):
    before = checksum(flair_node)
    logic.initialize(flair_node, model=str(tiny_model), policy="itermask2")
    for _ in range(3):
        logic.step()
    direct = Session(ModelBundle.load(tiny_model), flair_node.image, flair_node.affine, policy="itermask2")
    for _ in range(3):
        direct.step()
    assert same_geometry(logic.outputs.mask, flair_node) and same_geometry(logic.outputs.anomaly_map, flair_node)
    assert np.array_equal(shown(logic.outputs.mask), direct.prepared.mask_to_input(direct.current.mask))
    assert np.array_equal(logic.anomaly_map(), direct.anomaly_map()) and shown(logic.outputs.mask).any()
    logic.run(max_steps=2)  # a run's masks travel together when it is done
    for _ in range(2):
        if not direct.converged:
            direct.step()
    items = logic.outputs.sequence
    assert items.GetNumberOfDataNodes() == len(direct.iterations) == logic.state["count"] > 3
    for index, iteration in enumerate(direct.iterations):
        assert np.array_equal(shown(items.GetNthDataNode(index)), direct.prepared.mask_to_input(iteration.mask))
    assert np.array_equal(logic.anomaly_map(), direct.anomaly_map())
    assert checksum(flair_node) == before
    unread = [f for f in os.listdir(logic.worker.folder) if f != "worker.log" and not f.startswith("in-")]
    assert unread == []  # every array the worker wrote was read and deleted


@pytest.mark.parametrize("rule", ["squared", "bright"])
def test_the_worker_samples_masks_and_maps_of_either_rule_as_the_core_maps_them(flair_node, tiny_model, rule):
    session = Session(ModelBundle.load(tiny_model), flair_node.image, flair_node.affine, anomaly=rule)
    session.step()
    session.step()
    voxels = BrainVoxels(session.prepared)
    cache = InputGridCache(voxels.brain_kji)
    assert np.array_equal(cache.volume(voxels.values(session.model_grid_anomaly_map())).T, session.anomaly_map())
    assert np.array_equal(cache.volume(voxels.values(session.current.mask) >= 0.5).T,
                          session.prepared.mask_to_input(session.current.mask))


def test_the_hyperintense_map_sampled_at_its_support_alone_is_the_whole_map(flair_node):
    session = Session(load_model("flair-3d"), flair_node.image, flair_node.affine, policy="itermask3d")
    session.step()
    voxels = BrainVoxels(session.prepared)
    support = session.input_support().T[voxels.brain_kji]
    assert 0 < support.mean() < 0.2  # the point: a few per cent of the brain
    values = np.zeros(voxels.count, np.float32)
    values[support] = voxels.values(session.model_grid_anomaly_map(), support)
    assert np.array_equal(InputGridCache(voxels.brain_kji).volume(values).T, session.anomaly_map())


@pytest.mark.parametrize("degrees", [0.0, 12.0], ids=["on the model grid's planes", "oblique"])
def test_masks_sampled_only_where_they_changed_are_the_masks_sampled_everywhere(ms_flair, degrees):
    image, affine, brain = ms_flair
    session = Session(load_model("flair-3d"), image, oblique(affine, degrees), brain, policy="itermask3d")
    voxels = BrainVoxels(session.prepared)
    assert degrees or voxels.on_plane  # 1 mm voxels on a 3 mm grid: a third of them lie on each axis' planes
    sampler = MaskSampler(voxels)
    masks = [session.step().mask for _ in range(2)]
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):  # shrinking by scattered voxels, as IterMask3D does, but more at a time
        masks.append(masks[-1] & (torch.rand(masks[-1].shape, generator=generator) > 0.1))
    masks += [masks[1], ~masks[-1]]  # back to an earlier mask; one unlike any other
    for mask in masks:
        assert np.array_equal(sampler.sample(mask), voxels.values(mask) >= 0.5)


def test_a_reply_is_shown_a_piece_per_poll_and_nothing_can_start_meanwhile(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.begin("step")
    polls_after_reply = 0
    while (final := logic.poll(budget=0)) is None:
        if logic.state["count"] == 1:  # the reply has arrived; its volumes go into the scene one per poll
            polls_after_reply += 1
            with pytest.raises(ItermaskError, match="wait until the current step has finished"):
                logic.step()
        time.sleep(0.01)
    assert final["event"] == "done" and polls_after_reply >= 2 and not logic.busy
    assert np.array_equal(shown(logic.outputs.mask), logic.iteration_mask(0)) and logic.iteration_mask(0).any()
    assert np.array_equal(nodes.mask_array(logic.outputs.preview, flair_node), logic.preview)


def test_every_iteration_is_a_sequence_item_and_scrubbing_reuses_them(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    for _ in range(3):
        logic.step()
    sequence, browser = logic.outputs.sequence, logic.outputs.browser
    assert sequence.GetNumberOfDataNodes() == 3
    logic.seek(1)
    assert logic.state["count"] == 3 and logic.state["position"] == 1  # nothing recomputed or dropped
    item = shown(sequence.GetNthDataNode(1))
    assert np.array_equal(item, shown(logic.outputs.mask))
    proxy = browser.GetProxyNode(sequence)
    browser.SetSelectedItemNumber(2)
    assert np.array_equal(slicer.util.arrayFromVolume(proxy), slicer.util.arrayFromVolume(sequence.GetNthDataNode(2)))
    logic.set_tau(logic.state["tau"] * 2)  # branch: iteration 2 was made with the old τ
    assert sequence.GetNumberOfDataNodes() == 2
    logic.step()
    assert sequence.GetNumberOfDataNodes() == 3


def test_the_preview_is_what_apply_exports_voxel_for_voxel(logic, flair_node, tiny_model, tmp_path):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.run()
    values = panel.panel_values(logic)  # the policy's own threshold: calibrated on healthy scans
    assert values.threshold == 1.0 and values.threshold_label == "calibrated: flags about 1 % of healthy voxels"
    low = logic.preview_threshold(logic.state["threshold"] * 0.5).sum()
    high = logic.preview_threshold(logic.state["threshold"] * 2).sum()
    assert low > high > 0
    displayed = nodes.mask_array(logic.outputs.preview, flair_node)
    assert displayed.sum() == high
    assert float(logic.parameter_node().GetParameter("threshold")) == pytest.approx(logic.threshold)
    for source, expected in (("thresholded", displayed), ("mask", shown(logic.outputs.mask))):
        segmentation = logic.apply("Lesion", source=source)
        assert np.array_equal(nodes.mask_array(segmentation, flair_node), expected)
    with pytest.raises(ItermaskError, match="unknown result source"):
        logic.apply("Lesion", source="segmentation")


def test_under_a_recorded_clean_up_apply_is_itermask_segments_mask_voxel_for_voxel(logic, flair_node, tiny_model,
                                                                                   tmp_path):
    """A bundle whose rule segments the ``hyperintense`` map and cleans it up (median, 3 mm rim, clusters ≥ 0.05 ml,
    as flair's): the worker thresholds and cleans, so the module's Apply is the CLI's mask, its map the core's, and a
    person's threshold is the core's."""
    bundle = ModelBundle.load(tiny_model)
    data = bundle.metadata.to_json()
    data["segmentation"] = {"policy": "itermask2", "anomaly": "hyperintense", "threshold": 0.05, "median": True,
                            "rim_mm": 3.0, "min_component_ml": 0.05}
    bundle.metadata = BundleMetadata.from_json(data)
    model = bundle.save(tmp_path / "cleaned.pt")
    logic.initialize(flair_node, model=str(model), policy="itermask2")
    logic.run()
    applied = nodes.mask_array(logic.apply("Lesion"), flair_node)

    write_nifti(tmp_path / "flair.nii.gz", flair_node.image, flair_node.affine)
    assert main(["segment", str(tmp_path / "flair.nii.gz"), "--model", str(model), "--policy", "itermask2",
                 "--seed", "0", "--device", "cpu", "-o", str(tmp_path / "cli")]) == 0
    cli_mask = read_volume(tmp_path / "cli" / "flair" / "mask.nii.gz")[0] > 0
    cli_map = read_volume(tmp_path / "cli" / "flair" / "anomaly_map.nii.gz")[0]
    assert np.array_equal(applied, cli_mask) and applied.any()
    assert (applied != (cli_map > logic.threshold)).sum() > 100  # the clean-up changed the mask, and Apply has it

    session = Session(ModelBundle.load(model), flair_node.image, flair_node.affine, policy="itermask2", seed=0,
                      device="cpu")
    session.run()
    assert np.array_equal(logic.anomaly_map(), session.anomaly_map())  # the map shown is the one segmented
    assert (logic.anomaly_map() == 0).mean() > (session.prepared.map_to_input(session.current.error) == 0).mean()
    # The panel states the rule's threshold, the session's default, as 1.0 on the slider, well inside its range.
    values = panel.panel_values(logic)
    assert values.threshold == pytest.approx(1.0) and values.threshold_maximum >= 2.0
    assert values.threshold_label == "1.00 × default: chosen on the validation split for the hyperintense map"
    assert "percentile" not in values.threshold_label + values.threshold_tooltip
    lower = panel.threshold_from_slider(logic, 0.7)
    assert lower == pytest.approx(0.05 * 0.7)
    assert np.array_equal(logic.preview_threshold(lower), session.result(lower).mask > 0)
    assert panel.panel_values(logic).threshold_label == "0.70 × default (more voxels flagged)"
    assert np.array_equal(nodes.mask_array(logic.apply("Lesion"), flair_node), session.result(lower).mask > 0)


def test_apply_exports_a_named_lesion_segment_that_slicerio_reads_back(logic, flair_node, tiny_model, tmp_path):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.run()
    segmentation = logic.apply("Lesion")
    storage = segmentation.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp_path / "lesion.seg.nrrd"))
    assert storage.WriteData(segmentation)
    read = slicerio.read_segmentation(str(tmp_path / "lesion.seg.nrrd"))
    assert [s["name"] for s in read["segments"]] == ["Lesion"]
    terminology = str(read["segments"][0]["terminology"])  # what DICOM SEG export writes as the segment's type
    assert "49755003" in terminology and "52988006" in terminology
    voxels = read["voxels"] > 0
    expected = logic.preview
    offset = read["segments"][0].get("extent", [0, 0, 0, 0, 0, 0])[::2] if voxels.shape != expected.shape else (0, 0, 0)
    full = np.zeros_like(expected)
    full[offset[0]:offset[0] + voxels.shape[0], offset[1]:offset[1] + voxels.shape[1],
         offset[2]:offset[2] + voxels.shape[2]] = voxels
    assert np.array_equal(full, expected) and expected.any()
    lps = np.diag([-1, -1, 1, 1]) @ nodes.ijk_to_ras(flair_node)
    assert np.allclose(read["ijkToLPS"], lps, atol=1e-4)
    assert (expected & flair_node.blob).sum() / flair_node.blob.sum() > 0.5


def test_refinement_continues_from_an_edited_segmentation(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.step()
    logic.step()
    edited = nodes.segmentation_from_mask(logic.scene, flair_node.blob, flair_node, "edited", "keep")
    logic.continue_from_segmentation(edited)
    logic.step()
    assert logic.state["iteration"]["phase"] == "edited"
    mask = shown(logic.outputs.mask)
    assert 2 * (mask & flair_node.blob).sum() / (mask.sum() + flair_node.blob.sum()) > 0.85


def test_nothing_can_change_the_session_while_a_command_is_in_flight(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.begin("run")
    for change in (lambda: logic.set_tau(1.0), logic.step, lambda: logic.seek(0)):
        with pytest.raises(ItermaskError, match="wait until the current step has finished"):
            change()
    logic.cancel()
    assert logic.wait()["event"] == "cancelled"


def test_a_cancelled_run_leaves_session_and_scene_as_they_were(logic, flair_node, tiny_model):
    # IterMask3D's 100-step path: the run cannot converge before the cancel lands, however fast the machine.
    logic.initialize(flair_node, model=str(tiny_model), policy="itermask3d")
    logic.step()
    before = snapshot(logic)
    logic.begin("run")
    poll_until(logic, lambda: logic.state["count"] >= 3)  # steps have landed in the scene
    assert snapshot(logic) != before
    logic.cancel()
    assert logic.wait()["event"] == "cancelled"
    assert snapshot(logic) == before and logic.state["count"] == 1
    logic.step()  # the worker's session was put back too: the next step is iteration 1 again
    assert logic.state["position"] == 1 and logic.state["count"] == 2


def test_a_killed_worker_leaves_the_scene_as_it_was_and_the_next_action_restarts_it(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.step()
    before = snapshot(logic)
    first_pid = logic.worker.process.pid
    logic.begin("run")
    poll_until(logic, lambda: logic.state["count"] >= 2)
    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(WorkerDied, match=r"worker process was killed \(signal 9\)\. Nothing was changed"):
        logic.wait()
    assert not logic.ready and not logic.busy
    with pytest.raises(ItermaskError, match="initialize a session first"):
        logic.step()
    assert snapshot(logic) == before
    logic.initialize(flair_node, model=str(tiny_model))
    logic.step()
    assert logic.worker.process.pid != first_pid and logic.state["count"] == 1


def test_a_failing_command_is_reported_and_changes_nothing(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.step()
    before = snapshot(logic)
    with pytest.raises(ItermaskError, match="iteration 5 has not been computed"):
        logic.seek(5)
    assert snapshot(logic) == before and not logic.busy


def test_bad_brain_masks_are_refused_before_anything_is_created(logic, flair_node, tiny_model, mrml_scene):
    empty = slicer.util.addVolumeFromArray(np.zeros((4, 4, 4), np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
    ids = nodes.node_ids(mrml_scene)
    with pytest.raises(ItermaskError, match="brain mask is empty"):
        logic.initialize(flair_node, empty, model=str(tiny_model))
    assert nodes.node_ids(mrml_scene) == ids


def test_plot_and_parameters_follow_the_session(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model), policy="itermask3d", seed=4)
    logic.run()
    plot = logic.outputs.plot
    assert plot.chart.GetNumberOfPlotSeriesNodes() == 3
    taus = slicer.util.arrayFromTableColumn(plot.table, "tau")
    assert len(taus) >= 95 and np.isfinite(taus).all()
    stop_column = slicer.util.arrayFromTableColumn(plot.table, "tau_stop")
    assert np.allclose(stop_column, logic.state["tau"])
    params = logic.parameter_node()
    assert params.GetParameter("policy") == "itermask3d" and params.GetParameter("seed") == "4"
    assert params.GetNodeReference("inputVolume") is flair_node
    assert params.GetNodeReference("mask") is logic.outputs.mask
    assert int(params.GetParameter("iteration")) == logic.state["position"]


@pytest.mark.parametrize("brain_mask_class", ["vtkMRMLLabelMapVolumeNode", "vtkMRMLSegmentationNode", None])
def test_the_logic_writes_parameters_where_the_gui_wrapper_reads_them(logic, flair_node, tiny_model, brain_mask_class):
    """Names and layout as Slicer 5.10's parameterNodeWrapper serializers read them: a node under its own name; a
    member of a Union under ``<name>.<index of its type in the Union>`` (None: the value "True")."""
    brain_mask = None
    if brain_mask_class is not None:
        brain_mask = slicer.util.addVolumeFromArray((slicer.util.arrayFromVolume(flair_node) != 0).astype(np.uint8),
                                                    nodes.ijk_to_ras(flair_node), "brain",
                                                    nodeClassName="vtkMRMLLabelMapVolumeNode")
        if brain_mask_class == "vtkMRMLSegmentationNode":
            brain_mask = nodes.segmentation_from_mask(logic.scene, slicer.util.arrayFromVolume(brain_mask).T,
                                                      flair_node, "brain", "Brain", (1, 1, 1))
    logic.initialize(flair_node, brain_mask, model=str(tiny_model), seed=3)
    logic.step()
    logic.preview_threshold(2.0)
    logic.apply("Lesion")
    fields, params = parameter_fields(), logic.parameter_node()
    written = set(params.GetParameterNames())
    plain = {name for name in written if "." not in name}
    assert plain and plain <= set(fields), sorted(plain - set(fields))
    assert params.GetParameter("model") == str(tiny_model) and params.GetParameter("seed") == "3"
    unions = sorted(name for name in written if "." in name)
    assert len(unions) == 1 and unions[0].split(".")[0] == "brainMask"
    members = union_members(fields["brainMask"])
    index = int(unions[0].split(".")[1])
    if brain_mask is None:
        assert members[index] == "None" and params.GetParameter(unions[0]) == "True"
    else:
        assert members[index] == brain_mask_class and params.GetNodeReference(unions[0]) is brain_mask
        assert logic.parameters.brain_mask() is brain_mask


def test_settings_and_outputs_survive_saving_the_scene(logic, flair_node, tiny_model, mrml_scene, tmp_path):
    logic.initialize(flair_node, model=str(tiny_model), seed=7)
    logic.step()
    logic.preview_threshold(2.5)
    mrml_scene.WriteToMRB(str(tmp_path / "scene.mrb"), None, slicer.vtkMRMLMessageCollection())
    from headless_slicer import make_scene

    reloaded = make_scene()
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(tmp_path / "cache"))
    io = slicer.vtkDataIOManager()
    io.SetCacheManager(cache)
    reloaded.SetDataIOManager(io)
    reloaded.SetCacheManager(cache)
    assert reloaded.ReadFromMRB(str(tmp_path / "scene.mrb"), True, slicer.vtkMRMLMessageCollection())
    params = reloaded.GetSingletonNode("IterMaskSlicer", "vtkMRMLScriptedModuleNode")
    assert params.GetParameter("seed") == "7" and float(params.GetParameter("threshold")) == 2.5
    assert params.GetNodeReference("inputVolume").GetName() == "FLAIR"
    # The NRRD writer may store the volume with an axis flipped (and the matrix flipped to match): compare in RAS.
    saved, original = params.GetNodeReference("mask"), logic.outputs.mask
    saved_ijk = slicer.util.arrayFromVolume(saved).transpose(2, 1, 0).astype(np.float32)
    original_ijk = slicer.util.arrayFromVolume(original).transpose(2, 1, 0)
    onto = resample_onto(saved_ijk, nodes.ijk_to_ras(saved), nodes.ijk_to_ras(original), original_ijk.shape)
    assert np.array_equal(onto, original_ijk) and original_ijk.any()


def test_reset_removes_every_output_node(logic, flair_node, tiny_model, mrml_scene):
    ids = nodes.node_ids(mrml_scene)
    logic.initialize(flair_node, model=str(tiny_model))
    logic.step()
    logic.reset()
    remaining = nodes.node_ids(mrml_scene) - ids
    names = {mrml_scene.GetNodeByID(i).GetName() for i in remaining}
    assert names <= {"IterMask colors", "IterMaskSlicer"}  # shared colour table and the parameter node stay


def test_one_call_segmentation_for_the_python_console(logic, flair_node, tiny_model, mrml_scene):
    logic.parameter_node()
    ids = nodes.node_ids(mrml_scene)
    segmentation = logic.segment(flair_node, model=str(tiny_model), segment_name="Lesion")
    new = {mrml_scene.GetNodeByID(i).GetName() for i in nodes.node_ids(mrml_scene) - ids}
    assert new <= {"FLAIR IterMask", "IterMask colors"} | {segmentation.GetDisplayNode().GetName()}
    assert segmentation.GetSegmentation().GetNthSegment(0).GetName() == "Lesion"
    mask = nodes.mask_array(segmentation, flair_node)
    assert (mask & flair_node.blob).sum() / flair_node.blob.sum() > 0.5


def test_a_3d_model_runs_in_the_scene_with_its_own_threshold_and_plot(logic, flair_node, tiny_model_3d):
    logic.initialize(flair_node, model=str(tiny_model_3d), policy="itermask3d", seed=2)
    assert logic.model_info["dims"] == 3
    logic.run()
    assert logic.state["converged"] and same_geometry(logic.outputs.mask, flair_node)
    values = panel.panel_values(logic)  # the default is this scan's τ_stop: 1.0 on the slider, well inside its range
    assert logic.threshold == logic.state["tau_stop"] and values.threshold == 1.0 and values.threshold_maximum >= 2.0
    assert values.threshold_label == "1.00 × τ_stop: this scan's own threshold (IterMask3D)"
    fit = slicer.util.arrayFromTableColumn(logic.outputs.plot.table, "fit")
    assert np.isfinite(fit).all() and len(fit) >= 3
    segmentation = logic.apply("Lesion", source="mask")
    mask = nodes.mask_array(segmentation, flair_node)
    assert (mask & flair_node.blob).sum() / flair_node.blob.sum() > 0.5
