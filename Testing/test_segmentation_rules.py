"""Segmentation rules recorded in a bundle, τ_stop that is never silently absurd, warnings, and the validation that
chooses a bundle's defaults — on real scans with the tiny models trained here."""
from __future__ import annotations

import doctest
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from itermask import ItermaskError, ModelBundle, Session, rules, thresholding
from itermask.metadata import BundleMetadata
from itermask.normalize import iterative_zscore
from itermask_evaluation import splits, tables, validation

from conftest import brats


def _with_metadata(path, tmp_path, name: str, **changes):
    """The bundle at ``path`` with top-level entries of its metadata JSON changed (an object is merged into the one
    there), saved as ``tmp_path/<name>.pt``."""
    bundle = ModelBundle.load(path)
    data = bundle.metadata.to_json()
    for key, value in changes.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    bundle.metadata = BundleMetadata.from_json(data)
    return bundle.save(tmp_path / f"{name}.pt")


@pytest.mark.parametrize("module", [rules, thresholding, tables, validation])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0


def test_a_bundle_segments_with_its_recorded_rule_under_its_policy_only(tiny_model, scan, tmp_path):
    image, affine, brain, blob = scan
    rule = {"policy": "itermask2", "anomaly": "bright", "threshold": 0.5, "source": "tuned in a test"}
    bundle = ModelBundle.load(_with_metadata(tiny_model, tmp_path, "ruled", segmentation=rule))
    session = Session(bundle, image, affine, brain, seed=0, device="cpu")
    result = session.run()
    assert result.threshold == 0.5 and result.rule.anomaly == "bright"
    assert result.rule.source == "tuned in a test"
    squared = session.prepared.map_to_input(session.current.error)
    assert (result.anomaly_map <= squared + 1e-6).all()          # only the bright side of the same residual
    assert (result.anomaly_map < squared - 1e-3).any()           # dark residuals are dropped
    assert np.array_equal(result.mask, (result.anomaly_map > 0.5) & session.prepared.input_brain)
    other = Session(bundle, image, affine, brain, policy="itermask3d", seed=0, device="cpu")
    assert other.rule.anomaly == "squared" and other.rule.threshold is None


def test_the_hyperintense_map_is_the_bright_map_where_the_scan_is_above_its_healthy_intensity_threshold(tiny_model,
                                                                                                        scan, tmp_path):
    image, affine, brain, blob = scan
    rule = {"policy": "itermask2", "anomaly": "hyperintense", "threshold": 0.05}
    bundle = ModelBundle.load(_with_metadata(tiny_model, tmp_path, "hyper", segmentation=rule))
    session = Session(bundle, image, affine, brain, seed=0, device="cpu")
    result = session.run()
    z = iterative_zscore(torch.from_numpy(image.astype(np.float32)), torch.from_numpy(session.prepared.input_brain))
    hyper = z.numpy() > bundle.calibration.intensity_threshold
    bright = Session(bundle, image, affine, brain, seed=0, device="cpu", anomaly="bright")
    bright.run()
    assert np.array_equal(result.anomaly_map, np.where(hyper, bright.anomaly_map(), 0))
    assert result.mask[~hyper].sum() == 0 and result.mask[blob].mean() > 0.5  # the inserted lesion is bright
    assert (bright.result(0.05).mask[~hyper] > 0).any()  # the gate took away what the residual alone flagged
    bundle.metadata = BundleMetadata.from_json({**bundle.metadata.to_json(), "calibration": {
        **bundle.metadata.to_json()["calibration"], "intensity_threshold": None}})
    with pytest.raises(ItermaskError, match="no healthy-calibrated intensity threshold"):
        Session(bundle, image, affine, brain, device="cpu")


def test_a_session_takes_the_bundles_default_policy(tiny_model_3d, scan):
    image, affine, brain, _ = scan
    bundle = ModelBundle.load(tiny_model_3d)
    assert Session(bundle, image, affine, brain, device="cpu").policy.name == bundle.metadata.policy.default


def test_an_absurd_tau_stop_is_replaced_and_reported_on_one_line(tiny_model_3d, tmp_path):
    """A shrink path whose τ_stop lies 10⁴× below every healthy calibration scan's: the healthy τ_stop is used
    instead, and report.json and the command line both say so."""
    bundle = ModelBundle.load(tiny_model_3d)
    scans = bundle.calibration.to_json()["healthy_scans"]
    healthy = [{**scan, "tau_stop": 1e4} for scan in scans["itermask3d"]]
    path = _with_metadata(tiny_model_3d, tmp_path, "odd-healthy",
                          calibration={"healthy_scans": {**scans, "itermask3d": healthy}})
    out = tmp_path / "out"
    run = subprocess.run([sys.executable, "-m", "itermask.cli", "segment", str(brats("0006")), "--brain-mask",
                          str(brats("0006", "brainmask")), "--model", str(path), "--policy", "itermask3d",
                          "-o", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "Flair_subtrMeanDivStd" / "report.json").read_text())
    stop = report["policy_details"]["stop"]
    assert stop["tau_stop"] == 1e4 and stop["found"] < 1e4 / thresholding.HEALTHY_RANGE_FACTOR
    assert report["tau_stop"] == 1e4 and report["threshold"] == 1e4
    assert any("away from the healthy calibration scans" in w for w in report["warnings"])
    warnings = [line for line in run.stderr.splitlines() if line.startswith("itermask: warning:")]
    assert len(warnings) == len(report["warnings"]) >= 1


def test_a_whole_brain_segmentation_never_passes_without_a_warning(tiny_model, scan):
    image, affine, brain, _ = scan
    result = Session(ModelBundle.load(tiny_model), image, affine, brain, threshold=0.0, device="cpu").run()
    assert result.rule.source == "set by the user"
    assert any("% of the brain" in w for w in result.warnings)


def test_validation_scores_leave_one_out_and_applies_its_choice(tiny_model, tiny_model_3d, tmp_path):
    """Two labelled BraTS scans as the validation split and pat0003 as the "healthy" scan: every configuration runs
    on each, every tuned threshold comes from the other labelled scan, the default is the best Dice among the rules
    within the healthy bound (or none), and what is recorded is what `itermask segment` then uses or refuses."""
    manifests, models = tmp_path / "manifests", tmp_path / "models"
    manifests.mkdir(), models.mkdir()
    rows = ["image,brain_mask,lesion_mask,split", f"{brats('0003')},{brats('0003', 'brainmask')},,calibration"]
    rows += [f"{brats(c)},{brats(c, 'brainmask')},{brats(c, 'OTMultiClass')},validation" for c in ("0005", "0006")]
    (manifests / "flair.csv").write_text("\n".join(rows) + "\n")
    for dims, source in ((2, tiny_model), (3, tiny_model_3d)):
        (models / f"flair-{dims}d.pt").write_bytes(source.read_bytes())
    scans = splits.manifest_scans(manifests / "flair.csv")
    assert [s.role for s in scans] == ["healthy", "validation", "validation"]
    found, choice, _ = validation.evaluate_modality("flair", models, tmp_path / "cache", scans=scans)
    assert {r["scan"] for r in found if r["role"] == "validation"} == {"brats_2013_pat0005_1", "brats_2013_pat0006_1"}
    configurations = {(r["configuration"], r["rule"], r["post"]) for r in found}
    assert ("flair-3d itermask3d", "bright, tuned", "none") in configurations
    assert ("intensity", "intensity, tuned", "3 mm rim") in configurations
    assert all(0 <= r["dice"] <= 1 for r in found if not np.isnan(r["dice"]))
    healthy = [r for r in found if r["role"] == "healthy"]
    assert healthy and all(r["false_positive_ml"] == pytest.approx(r["segmented_ml"]) for r in healthy)
    table = validation.mean_table(found)
    intensity = max(m["dice"] for m in table if m["configuration"] == "intensity" and m["post"] == "none")
    within = [m for m in table if m["configuration"] != "intensity"
              and m["rule"] in validation.SHIPPABLE and validation.meets_healthy_bound(m)]
    best = within[0] if within else None
    assert choice["default"] == (best["configuration"].split()[0] if best and best["dice"] > intensity else None)

    validation.apply({"flair": choice}, models)
    assert json.loads((models / "defaults.json").read_text()) == {"FLAIR": choice["default"]}
    out = tmp_path / "out"
    env = {**os.environ, "ITERMASK_MODEL_PATH": str(models)}
    run = subprocess.run([sys.executable, "-m", "itermask.cli", "segment", str(brats("0006")), "--brain-mask",
                          str(brats("0006", "brainmask")), "--modality", "FLAIR", "-o", str(out)],
                         capture_output=True, text=True, env=env)
    if choice["default"] is None:
        assert run.returncode != 0 and "no validated model for FLAIR" in run.stderr
        return
    assert run.returncode == 0, run.stderr
    chosen = choice["bundles"][choice["default"]]
    recorded = ModelBundle.load(models / f"{choice['default']}.pt").metadata
    assert recorded.segmentation.anomaly == chosen["anomaly"] and recorded.policy.default == chosen["policy"]
    report = json.loads((out / "Flair_subtrMeanDivStd" / "report.json").read_text())
    assert report["model"] == recorded.name and report["policy"] == chosen["policy"]
    assert report["segmentation_rule"]["anomaly"] == chosen["anomaly"]
    assert report["segmentation_rule"]["post"]["rim_mm"] == chosen["rim_mm"]
    if chosen["threshold"] is not None:
        assert report["threshold"] == pytest.approx(chosen["threshold"])
