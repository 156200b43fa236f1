"""Model files that are corrupt, foreign or carry code, and scans that are not what they should be."""

import numpy as np
import pytest
import torch

import itermask
from itermask import ItermaskError, ModelBundle
from itermask.metadata import Grid
from itermask.preprocess import prepare_volume

GRID = Grid(spacing_mm=2.0, min_size=(1, 96, 96))


def test_bundle_round_trip_keeps_metadata_and_weights(tiny_model, tmp_path):
    bundle = ModelBundle.load(tiny_model)
    copy = ModelBundle.load(bundle.save(tmp_path / "copy.pt"))
    assert copy.metadata == bundle.metadata
    for role in bundle.networks:
        for a, b in zip(bundle.networks[role].state_dict().values(), copy.networks[role].state_dict().values()):
            assert torch.equal(a, b)


def test_truncated_and_random_files_are_refused(tiny_model, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_model.read_bytes()[:5000])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    for path in (truncated, noise):
        with pytest.raises(ItermaskError, match="not a readable IterMask model bundle"):
            ModelBundle.load(path)


def test_a_foreign_state_dict_is_refused(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(ItermaskError, match="not an IterMask model bundle"):
        ModelBundle.load(path)


class _Exploit:
    def __reduce__(self):
        return (open, ("/tmp/itermask-pwned", "w"))


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"itermask_bundle": _Exploit(), "weights": {}}, path)
    with pytest.raises(ItermaskError, match="not a readable"):
        ModelBundle.load(path)
    assert not __import__("os").path.exists("/tmp/itermask-pwned")


def test_unknown_model_and_modality_names_say_what_exists():
    with pytest.raises(ItermaskError, match="unknown model 'no-such-model'"):
        itermask.load_model("no-such-model")
    with pytest.raises(ItermaskError, match="unknown modality 'PET'"):
        itermask.default_model_name("PET")


@pytest.mark.parametrize("image, brain, message", [
    (np.ones((30, 30)), None, "expected a 3D volume, got 2D"),
    (np.ones((20, 20, 20, 3)), None, "expected a 3D volume, got 4D"),
    (np.full((20, 20, 20), np.nan), None, "NaN or infinite"),
    (np.zeros((20, 20, 20)), None, "empty"),
    (np.ones((20, 20, 20)), np.zeros((20, 20, 20)), "brain mask is empty"),
    (np.ones((20, 20, 20)), np.ones((20, 20, 21)), "brain mask has shape"),
    (np.ones((20, 20, 20)), None, "not skull-stripped"),
])
def test_bad_volumes_get_one_clear_line(image, brain, message):
    with pytest.raises(ItermaskError, match=message) as info:
        prepare_volume(image, np.eye(4), brain, GRID, (1, 16, 16))
    assert "\n" not in str(info.value)
