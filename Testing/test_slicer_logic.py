"""The Slicer glue on a real slicer-core MRML scene: nodes, geometry, sequence, plot, parameters, cancel, export."""
import hashlib

import numpy as np
import pytest
import slicer
import slicerio

from itermask import ItermaskError, ModelBundle
from itermask.geometry import resample_onto
from itermask.io import read_volume
from IterMaskSlicerLib import nodes
from IterMaskSlicerLib.logic import IterMaskLogic

from conftest import MS, insert_blob


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
    node.blob = blob
    return node


@pytest.fixture()
def logic(mrml_scene, tiny_model):
    return IterMaskLogic(mrml_scene, load_model=ModelBundle.load)


def checksum(node):
    return hashlib.sha1(slicer.util.arrayFromVolume(node).tobytes()).hexdigest()


def same_geometry(a, b):
    return np.allclose(nodes.ijk_to_ras(a), nodes.ijk_to_ras(b)) and \
        a.GetImageData().GetDimensions() == b.GetImageData().GetDimensions()


def test_steps_show_the_mask_on_the_input_grid_and_never_touch_the_input(logic, flair_node, tiny_model):
    before = checksum(flair_node)
    logic.initialize(flair_node, model=str(tiny_model))
    for _ in range(3):
        logic.step()
    mask_node = logic.outputs["mask"]
    assert same_geometry(mask_node, flair_node) and same_geometry(logic.outputs["anomaly_map"], flair_node)
    shown = slicer.util.arrayFromVolume(mask_node).transpose(2, 1, 0).astype(bool)
    expected = logic.session.prepared.mask_to_input(logic.session.current.mask)
    assert np.array_equal(shown, expected) and shown.any()
    assert checksum(flair_node) == before


def test_every_iteration_is_a_sequence_item_and_scrubbing_reuses_them(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    for _ in range(3):
        logic.step()
    sequence, browser = logic.outputs["sequence"], logic.outputs["browser"]
    assert sequence.GetNumberOfDataNodes() == 3
    logic.seek(1)
    assert len(logic.session.iterations) == 3  # nothing recomputed or dropped
    item = slicer.util.arrayFromVolume(sequence.GetNthDataNode(1)).transpose(2, 1, 0).astype(bool)
    assert np.array_equal(item, slicer.util.arrayFromVolume(logic.outputs["mask"]).transpose(2, 1, 0).astype(bool))
    proxy = browser.GetProxyNode(sequence)
    browser.SetSelectedItemNumber(2)
    assert np.array_equal(slicer.util.arrayFromVolume(proxy), slicer.util.arrayFromVolume(sequence.GetNthDataNode(2)))
    logic.set_tau(logic.session.tau * 2)  # branch: iteration 2 was made with the old τ
    assert sequence.GetNumberOfDataNodes() == 2
    logic.step()
    assert sequence.GetNumberOfDataNodes() == 3


def test_threshold_preview_updates_live_from_the_cached_map(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.run()
    calls = len(logic.session.iterations)
    low = logic.preview_threshold(logic.session.threshold * 0.5).sum()
    high = logic.preview_threshold(logic.session.threshold * 2).sum()
    assert low > high
    assert slicer.util.arrayFromVolume(logic.outputs["preview"]).sum() == high
    assert len(logic.session.iterations) == calls
    assert float(logic.parameter_node().GetParameter("Threshold")) == pytest.approx(logic.session.threshold)


def test_apply_exports_a_named_segment_that_slicerio_reads_back(logic, flair_node, tiny_model, tmp_path):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.run()
    segmentation = logic.apply("Lesion")
    storage = segmentation.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp_path / "lesion.seg.nrrd"))
    assert storage.WriteData(segmentation)
    read = slicerio.read_segmentation(str(tmp_path / "lesion.seg.nrrd"))
    assert [s["name"] for s in read["segments"]] == ["Lesion"]
    voxels = read["voxels"] > 0
    expected = (logic.anomaly_map() > logic.session.threshold) & logic.session.prepared.input_brain
    offset = read["segments"][0].get("extent", [0, 0, 0, 0, 0, 0])[::2] if voxels.shape != expected.shape else (0, 0, 0)
    full = np.zeros_like(expected)
    full[offset[0]:offset[0] + voxels.shape[0], offset[1]:offset[1] + voxels.shape[1],
         offset[2]:offset[2] + voxels.shape[2]] = voxels
    assert np.array_equal(full, expected) and expected.any()
    lps = np.diag([-1, -1, 1, 1]) @ nodes.ijk_to_ras(flair_node)
    assert np.allclose(read["ijkToLPS"], lps, atol=1e-4)
    overlap = (expected & flair_node.blob).sum() / flair_node.blob.sum()
    assert overlap > 0.5


def test_refinement_continues_from_an_edited_segmentation(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.step()
    logic.step()
    edited = nodes.segmentation_from_mask(logic.scene, flair_node.blob, flair_node, "edited", "keep")
    logic.continue_from_segmentation(edited)
    it = logic.step()
    assert it.phase == "edited"
    shown = slicer.util.arrayFromVolume(logic.outputs["mask"]).transpose(2, 1, 0).astype(bool)
    assert 2 * (shown & flair_node.blob).sum() / (shown.sum() + flair_node.blob.sum()) > 0.85


def test_a_cancelled_run_leaves_session_and_scene_as_they_were(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.step()
    ids = nodes.node_ids(logic.scene)
    shown = slicer.util.arrayFromVolume(logic.outputs["mask"]).copy()
    polls = iter([False, False, True])
    assert logic.run(cancelled=lambda: next(polls)) is False
    assert len(logic.session.iterations) == 1 and logic.session.position == 0
    assert nodes.node_ids(logic.scene) == ids
    assert logic.outputs["sequence"].GetNumberOfDataNodes() == 1
    assert np.array_equal(slicer.util.arrayFromVolume(logic.outputs["mask"]), shown)


def test_a_failing_run_leaves_session_and_scene_as_they_were(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model))
    logic.step()
    ids, shown = nodes.node_ids(logic.scene), slicer.util.arrayFromVolume(logic.outputs["mask"]).copy()
    reconstruct, calls = logic.session._reconstruct, []

    def runs_out_of_memory_on_the_second_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory")
        return reconstruct(*args, **kwargs)

    logic.session._reconstruct = runs_out_of_memory_on_the_second_call
    with pytest.raises(RuntimeError, match="out of memory"):
        logic.run()
    assert len(logic.session.iterations) == 1 and nodes.node_ids(logic.scene) == ids
    assert logic.outputs["sequence"].GetNumberOfDataNodes() == 1
    assert np.array_equal(slicer.util.arrayFromVolume(logic.outputs["mask"]), shown)


def test_bad_brain_masks_are_refused_before_anything_is_created(logic, flair_node, tiny_model, mrml_scene):
    empty = slicer.util.addVolumeFromArray(np.zeros((4, 4, 4), np.uint8), nodeClassName="vtkMRMLLabelMapVolumeNode")
    ids = nodes.node_ids(mrml_scene)
    with pytest.raises(ItermaskError, match="brain mask is empty"):
        logic.initialize(flair_node, empty, model=str(tiny_model))
    assert nodes.node_ids(mrml_scene) == ids


def test_plot_and_parameters_follow_the_session(logic, flair_node, tiny_model):
    logic.initialize(flair_node, model=str(tiny_model), policy="itermask3d", seed=4)
    logic.run()
    plot = logic.outputs["plot"]
    assert plot.chart.GetNumberOfPlotSeriesNodes() == 3
    table = plot.table.GetTable()
    taus = logic.session.policy.path_taus(logic.session)
    assert table.GetNumberOfRows() == len(taus) >= 95
    stop_column = slicer.util.arrayFromTableColumn(plot.table, "tau_stop")
    assert np.allclose(stop_column, logic.session.tau)
    params = logic.parameter_node()
    assert params.GetParameter("Policy") == "itermask3d" and params.GetParameter("Seed") == "4"
    assert params.GetNodeReference("InputVolume") is flair_node
    assert params.GetNodeReference("mask") is logic.outputs["mask"]
    assert int(params.GetParameter("Iteration")) == logic.session.position


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
    params = reloaded.GetFirstNodeByName("IterMaskSlicer")
    assert params.GetParameter("Seed") == "7" and float(params.GetParameter("Threshold")) == 2.5
    assert params.GetNodeReference("InputVolume").GetName() == "FLAIR"
    # The NRRD writer may store the volume with an axis flipped (and the matrix flipped to match): compare in RAS.
    saved, original = params.GetNodeReference("mask"), logic.outputs["mask"]
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
    ids = nodes.node_ids(mrml_scene)
    segmentation = logic.segment(flair_node, model=str(tiny_model), segment_name="Lesion")
    new = {mrml_scene.GetNodeByID(i).GetClassName() for i in nodes.node_ids(mrml_scene) - ids}
    assert new == {"vtkMRMLSegmentationNode", "vtkMRMLSegmentationDisplayNode"}
    assert segmentation.GetSegmentation().GetNthSegment(0).GetName() == "Lesion"
    mask = nodes.mask_array(segmentation, flair_node)
    assert mask.shape == flair_node.blob.shape
    assert (mask & flair_node.blob).sum() / flair_node.blob.sum() > 0.5
    assert nodes.node_ids(mrml_scene) - ids == {segmentation.GetID(), segmentation.GetDisplayNode().GetID()}


def test_a_3d_model_runs_in_the_scene_with_its_own_threshold_and_plot(mrml_scene, flair_node, tiny_model_3d):
    logic = IterMaskLogic(mrml_scene, load_model=ModelBundle.load)
    logic.initialize(flair_node, model=str(tiny_model_3d), policy="itermask3d", seed=2)
    logic.run()
    assert logic.session.model.dims == 3 and logic.session.converged
    assert same_geometry(logic.outputs["mask"], flair_node)
    fit = slicer.util.arrayFromTableColumn(logic.outputs["plot"].table, "fit")
    assert np.isfinite(fit).all() and len(fit) == len(logic.session.policy.path_taus(logic.session))
    segmentation = logic.apply("Lesion", source="mask")
    mask = nodes.mask_array(segmentation, flair_node)
    assert mask.shape == flair_node.blob.shape
    assert (mask & flair_node.blob).sum() / flair_node.blob.sum() > 0.5
