"""A sequence the validation found no model for gets no silent default: the CLI, the API and `itermask models` say
so in one line, and what `--model NAME` would give (read from the bundles' own metadata, without torch)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

import itermask
from itermask.bundle import ModelBundle
from itermask.discovery import validated_default
from itermask.errors import ItermaskError
from itermask.metadata import SegmentationChoice

from conftest import MS, REPO

SHIPPED = REPO / "IterMaskSlicer" / "Resources" / "Models"


@pytest.fixture
def models_without_t1_default(tmp_path, monkeypatch):
    """A model folder first on the path: the shipped FLAIR and T1 bundles, T1's recording a rule that failed the
    healthy bound, and a defaults.json with T1 → null (what the validation writes for such a sequence)."""
    for name in ("flair-3d", "t1-3d"):
        shutil.copy(SHIPPED / f"{name}.pt", tmp_path / f"{name}.pt")
    bundle = ModelBundle.load(tmp_path / "t1-3d.pt")
    failed = SegmentationChoice(policy="itermask3d", anomaly="squared", threshold=None, rule="policy threshold",
                                validation_dice=0.093, validation_scans=3, healthy_fp_ml_median=240.0,
                                healthy_fp_ml_max=443.0, healthy_scans="healthy scans (3)", healthy_bound_met=False)
    bundle.metadata = replace(bundle.metadata, segmentation=failed)
    bundle.save(tmp_path / "t1-3d.pt")
    (tmp_path / "defaults.json").write_text(json.dumps({"FLAIR": "flair-3d", "T1": None}))
    monkeypatch.setenv("ITERMASK_MODEL_PATH", str(tmp_path))
    return tmp_path


def test_no_default_is_reported_with_what_the_best_bundle_would_give(models_without_t1_default):
    name, line = validated_default("t1")
    assert name is None
    assert line.startswith("no validated model for T1") and "--model t1-3d" in line
    assert "0.09" in line and "240 ml median / 443 ml most" in line and "\n" not in line
    assert validated_default("FLAIR")[0] == "flair-3d"
    with pytest.raises(ItermaskError, match="no validated model for T1"):
        itermask.default_model_name("T1")
    assert itermask.default_model_name("T1", dims=3) == "t1-3d"  # asking for a model by kind still works


def test_the_command_line_refuses_without_model_and_lists_the_reason(models_without_t1_default, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "itermask.cli", *a], capture_output=True, text=True)  # noqa: E731
    refused = run("segment", str(MS / "T1.nii.gz"), "--modality", "T1", "-o", str(tmp_path / "out"))
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("itermask: error:")
    assert "no validated model for T1" in refused.stderr and "--model t1-3d" in refused.stderr
    assert not (tmp_path / "out" / "T1").exists()
    listing = run("models")
    assert listing.returncode == 0 and "no validated model for T1" in listing.stdout
    assert "flair-3d*" in listing.stdout


def test_the_lookup_needs_no_torch(models_without_t1_default):
    """The Slicer module and the web page ask before torch is installed."""
    code = ("import sys; sys.modules['torch'] = None; import itermask; "
            "print(itermask.validated_default('T1')[0], itermask.validated_default('FLAIR')[0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "flair-3d"]
