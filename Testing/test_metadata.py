"""Typed bundle metadata: every bundle in the repository reads into it and writes back the same JSON, with or without
torch; a bundle whose metadata is wrong is refused in one line naming the file; a training run's metadata takes the
format's defaults from the one place they are written."""
from __future__ import annotations

import doctest
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from itermask import ItermaskError, ModelBundle
from itermask import metadata as metadata_module
from itermask.discovery import read_metadata
from itermask.metadata import BundleMetadata, Calibration, PolicySettings, SliceMasks, VolumeMasks
from itermask_training.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
BUNDLES = sorted([*(REPO / "IterMaskSlicer" / "Resources" / "Models").glob("*.pt"),
                  *(REPO / "evaluation" / "models").glob("*.pt")])


def stored_json(path: Path) -> dict:
    return json.loads(torch.load(path, map_location="cpu", weights_only=True)["itermask_bundle"])


def test_docstring_examples():
    assert doctest.testmod(metadata_module).failed == 0


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.stem)
def test_every_bundle_in_the_repository_reads_typed_and_writes_back_the_same_json(path, tmp_path):
    stored = stored_json(path)
    bundle = ModelBundle.load(path)
    assert bundle.metadata.to_json() == stored
    assert read_metadata(path) == bundle.metadata          # the torch-free reader Slicer uses agrees
    assert stored_json(bundle.save(tmp_path / path.name)) == stored


def test_a_bundle_from_before_the_baselines_and_the_ablation_reads_as_it_meant(tmp_path):
    """Bundles written before ``method``, ``skips`` and ``masked_input`` existed were IterMask models with skip
    connections whose masked network saw x_f."""
    path = BUNDLES[0]
    raw = torch.load(path, map_location="cpu", weights_only=True)
    data = stored_json(path)
    del data["method"], data["architecture"]["skips"], data["frequency"]["masked_input"]
    raw["itermask_bundle"] = json.dumps(data)
    torch.save(raw, tmp_path / "old.pt")
    old = ModelBundle.load(tmp_path / "old.pt")
    assert old.method == "itermask" and old.metadata.architecture.skips and old.uses_frequency
    assert replace(old.metadata, method=ModelBundle.load(path).metadata.method) == ModelBundle.load(path).metadata


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("grid"), "bundle metadata lacks grid"),
    (lambda d: d["grid"].pop("spacing_mm"), "bundle metadata grid lacks spacing_mm"),
    (lambda d: d["policy"].update(temperature=1.0), "bundle metadata policy has unknown field"),
    (lambda d: d.update(format_version=99), "needs a newer IterMask (bundle format 99)"),
    (lambda d: d.update(networks=["masked"]), "is not a known layout"),
    (lambda d: d.update(modality="PET"), "unknown modality 'PET'"),
    (lambda d: d["method"].update(name="gan"), "unknown method 'gan'"),
    (lambda d: d.update(dims=3), "bundle metadata masks (3D) has unknown field(s) coarse_px"),
    (lambda d: d["calibration"].update(threshold="high"), "calibration threshold is 'high', not a finite number"),
    (lambda d: d.update(grid=[2.0]), "bundle metadata grid is not a JSON object"),
])
def test_wrong_metadata_is_refused_in_one_line_naming_the_file(change, message, tmp_path):
    source = next(p for p in BUNDLES if p.stem == "flair-2d")
    raw = torch.load(source, map_location="cpu", weights_only=True)
    data = stored_json(source)
    change(data)
    raw["itermask_bundle"] = json.dumps(data)
    path = tmp_path / "wrong.pt"
    torch.save(raw, path)
    for read in (ModelBundle.load, read_metadata):
        with pytest.raises(ItermaskError, match=re.escape(message)) as refused:
            read(path)
        text = str(refused.value)
        assert text.startswith(str(path)) and "\n" not in text


def test_a_training_run_records_the_formats_defaults_and_its_own_choices():
    two = TrainConfig(source="", output="", name="a", modality="flair", channels=(4, 8), size=32).metadata()
    assert two.policy == PolicySettings(default="itermask2") and two.masks == SliceMasks(coarse_px=7.5)
    assert two.masks.whole_brain_fraction == 0.0 and two.calibration == Calibration()
    assert two.modality == "FLAIR" and two.grid.min_size == (1, 32, 32) and two.networks == ("first", "masked")
    three = TrainConfig(source="", output="", name="b", modality="T2", dims=3, method="dae",
                        whole_brain_fraction=0.5).metadata()
    assert three.policy.default == "itermask3d" and three.masks == VolumeMasks(cells_mm=(2.0, 4.0, 8.0),
                                                                              whole_brain_fraction=0.5)
    assert three.method.noise == "positive" and three.networks == ("denoiser",)
    assert BundleMetadata.from_json(three.to_json()) == three
    with pytest.raises(ItermaskError, match="unknown method 'gan'"):
        TrainConfig(source="", output="", name="c", modality="T1", method="gan").metadata()
