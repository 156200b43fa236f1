"""Training: data from a manifest, lesion exclusion, checkpoints and an exact resume."""
import os

import torch

from itermask import ModelBundle
from itermask.cli import main
from itermask_training.data import load_training_set, read_cases, read_manifest

from conftest import MS, brats

GRID = {"spacing_mm": 6.0, "min_size": [1, 32, 32]}


def manifest(folder):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cases.csv"
    path.write_text("image,brain_mask,lesion_mask,split\n"
                    f"{MS / 'FLAIR.nii.gz'},,{MS / 'lesion_mask.nii.gz'},train\n"
                    f"{brats('0005')},{brats('0005', 'brainmask')},{brats('0005', 'OTMultiClass')},calibration\n")
    return path


def test_lesions_are_left_out_of_the_valid_region(tmp_path):
    cases = read_manifest(manifest(tmp_path))
    slices = load_training_set([cases[1]], GRID, dims=2, divisor=8, min_brain_pixels=20)
    assert (slices.valid <= slices.brain).all()
    tumour = slices.brain & ~slices.valid
    assert tumour.sum() > 50  # the BraTS tumour (plus margin) is excluded
    assert slices.image[~slices.brain].abs().max() == 0


def train_args(folder, *extra):
    return ["train", "--data", str(manifest(folder)), "-o", str(folder), "--name", "t", "--modality", "FLAIR",
            "--steps", "12", "--batch-size", "4", "--channels", "4", "8", "--spacing", "6", "--size", "32", *extra]


def test_an_interrupted_run_resumes_to_the_same_model(tmp_path):
    straight, sliced = tmp_path / "straight", tmp_path / "sliced"
    assert main(train_args(straight)) == 0
    assert main(train_args(sliced, "--stop-after", "5")) == 0
    assert not (sliced / "t.pt").exists() and (sliced / "checkpoint.ckpt").exists()
    assert main(train_args(sliced)) == 0
    a, b = ModelBundle.load(straight / "t.pt"), ModelBundle.load(sliced / "t.pt")
    # The loss log of the resumed run is the uninterrupted one's, step for step; its curve is drawn.
    log = (straight / "training_log.csv").read_text()
    assert (sliced / "training_log.csv").read_text() == log
    assert len(log.splitlines()) == 1 + 12 * 2 and (sliced / "loss.png").stat().st_size > 0
    for role in a.networks:
        for x, y in zip(a.networks[role].state_dict().values(), b.networks[role].state_dict().values()):
            assert torch.allclose(x, y, atol=1e-6)
    assert a.calibration == b.calibration and a.calibration["tau"] > 0
    assert a.metadata["training"]["data"] == [os.path.relpath(MS / "FLAIR.nii.gz", straight)]


def test_a_folder_of_scans_with_mask_files_beside_them_is_read_as_cases(tmp_path):
    for name, target in (("a", brats("0003")), ("a_brainmask", brats("0003", "brainmask")),
                         ("a_lesion", brats("0003", "OTMultiClass")), ("b", MS / "FLAIR.nii.gz"),
                         ("b_lesion", MS / "lesion_mask.nii.gz"), ("c", brats("0005"))):
        (tmp_path / f"{name}.nii.gz").symlink_to(target)
    cases = read_cases(tmp_path)
    assert [(c.image.name, c.split) for c in cases] == [("a.nii.gz", "train"), ("b.nii.gz", "train"),
                                                         ("c.nii.gz", "calibration")]
    assert cases[0].brain_mask.name == "a_brainmask.nii.gz" and cases[0].lesion_mask.name == "a_lesion.nii.gz"
    assert cases[1].brain_mask is None and cases[1].lesion_mask.name == "b_lesion.nii.gz"
    assert cases[2].brain_mask is None and cases[2].lesion_mask is None
