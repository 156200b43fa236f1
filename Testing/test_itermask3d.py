"""IterMask3D: the unified 3D model on real volumes, whole-brain masks in training, subject-specific τ in 3D."""
import json

import numpy as np
import pytest
import torch

from itermask import ModelBundle, Session
from itermask.cases import read_manifest
from itermask.cli import main
from itermask_training.batches import training_batch
from itermask_training.data import load_training_set

from conftest import MS

@pytest.fixture(scope="module")
def bundle(tiny_model_3d):
    return ModelBundle.load(tiny_model_3d)


def test_a_3d_bundle_records_its_grid_masks_and_healthy_reference(bundle):
    meta = bundle.metadata
    assert bundle.dims == 3 and set(bundle.networks) == {"unified"}
    assert meta.grid.spacing_mm == 4.0 and meta.masks.cells_mm == (2.0, 4.0, 8.0)
    assert meta.policy.default == "itermask3d" and 0 < meta.masks.whole_brain_fraction < 1
    healthy = bundle.calibration.healthy_scans
    assert set(healthy) == {"itermask2", "itermask3d"} and len(healthy["itermask3d"]) == 1
    assert healthy["itermask3d"][0].tau_stop > 0 and healthy["itermask2"][0].tau_stop is None
    assert bundle.calibration.threshold > bundle.calibration.tau > 0


def test_3d_training_batches_are_whole_volumes_some_wholly_hidden(tiny_model_3d, bundle):
    cases = [c for c in read_manifest(tiny_model_3d.parent / "cases.csv") if c.split == "train"]
    volumes = load_training_set(cases, bundle.metadata.grid, 3, divisor=4)
    assert volumes.dims == 3 and len(volumes) == 2
    gen = torch.Generator().manual_seed(0)
    whole = training_batch(volumes, 2, bundle.metadata, gen, whole_brain_fraction=1.0)
    assert torch.equal(whole["hidden"], whole["brain"])
    partial = training_batch(volumes, 2, bundle.metadata, gen, whole_brain_fraction=0.0)
    brain_voxels = partial["brain"].sum(dim=(1, 2, 3, 4))
    hidden_share = partial["hidden"].sum(dim=(1, 2, 3, 4)) / brain_voxels
    assert ((hidden_share > 0) & (hidden_share < 1)).all()
    assert not (partial["hidden"] & ~partial["brain"]).any()


def test_a_3d_subject_specific_run_shrinks_towards_the_anomaly_and_stops(bundle, scan):
    image, affine, brain, blob = scan
    session = Session(bundle, image, affine, brain, policy="itermask3d", seed=1, device="cpu")
    result = session.run()
    path = [it for it in session.iterations if it.phase == "path"]
    final = [it for it in session.iterations if it.phase == "final"]
    assert len(path) >= 95 and final and result.converged
    fractions = [it.mask.sum().item() / session.brain_voxels for it in path]
    assert np.allclose(np.diff(fractions)[:-1], -0.01, atol=0.001)
    assert result.policy.stop.t_star < len(path) and result.policy.tau_stop == session.tau
    hidden = session.prepared.mask_to_input(final[-1].mask)
    share_in_blob = float((hidden & blob).sum()) / max(int(hidden.sum()), 1)
    assert hidden.sum() < 0.5 * brain.sum()                 # far smaller than the brain it started from,
    assert share_in_blob > 2 * blob.sum() / brain.sum()     # richer in the anomaly than the brain is,
    assert float((hidden & blob).sum()) / blob.sum() > 0.5  # and most of the anomaly is still hidden
    # The segmentation is the final anomaly map thresholded at the subject's own τ_stop (no healthy calibration
    # data), so it agrees with the final mask and, like it, holds the anomaly.
    assert result.threshold == result.policy.tau_stop != bundle.calibration.threshold
    segmentation = result.mask.astype(bool)
    assert 2 * float((segmentation & hidden).sum()) / (segmentation.sum() + hidden.sum()) > 0.6
    assert float((segmentation & blob).sum()) / blob.sum() > 0.5
    assert float((segmentation & blob).sum()) / segmentation.sum() > 1.5 * blob.sum() / brain.sum()
    assert result.mask.shape == image.shape and result.anomaly_map.shape == image.shape
    session.threshold = 2 * session.tau                     # a person's choice wins over the policy's
    assert session.result().threshold == 2 * session.tau and session.result().mask.sum() < result.mask.sum()


def test_cli_segments_with_the_3d_model_and_reports_the_path_and_healthy_percentile(tiny_model_3d, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", str(MS / "FLAIR.nii.gz"), "--model", str(tiny_model_3d), "--policy", "itermask3d",
                 "-o", str(out)]) == 0
    report = json.loads((out / "FLAIR" / "report.json").read_text())
    details = report["policy_details"]
    assert report["dims"] == 3 and len(details["tau_path"]) >= 95
    assert set(details["stop"]["fit"]) == {"a", "b", "r2"} and report["tau_stop"] == details["tau_stop"]
    percentile = report["scan_score"]["healthy_percentile"]
    assert percentile["healthy_scans"] == 1 and percentile["final_mask_ml"] in (0.0, 100.0)
