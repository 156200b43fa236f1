"""Baselines and ablations trained through ``itermask train``, and ``itermask evaluate`` end to end on real MRI."""
from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from conftest import MS, _train_tiny
from itermask import Session, load_model
from itermask.cli import main
from itermask.errors import ItermaskError
from itermask.io import read_volume, write_nifti
from itermask.metadata import Method

TINY_3D = ("--dims", "3", "--batch-size", "2", "--channels", "8", "16", "32", "--size", "32", "--lr", "3e-3")


@pytest.fixture(scope="module")
def tiny_dae(tmp_path_factory):
    """A tiny 3D denoising autoencoder with hyper-intense noise, trained and calibrated like the IterMask models."""
    return _train_tiny(tmp_path_factory.mktemp("tiny_dae"), "tiny-dae", "--method", "dae", "--steps", "40", *TINY_3D)


def test_a_baseline_bundle_is_a_one_network_model_that_sessions_refuse(tiny_dae, ms_flair):
    bundle = load_model(tiny_dae)
    assert bundle.method == "dae" and list(bundle.networks) == ["denoiser"]
    assert bundle.metadata.method == Method(name="dae", noise="positive", noise_sd=1.2, noise_cell_mm=15.0)
    assert bundle.networks["denoiser"].down[0][0].in_channels == 1          # the image alone
    assert bundle.calibration.threshold > 0 and bundle.calibration.tau is None
    image, affine, brain = ms_flair
    with pytest.raises(ItermaskError, match="DAE baseline for evaluation"):
        Session(bundle, image, affine, brain)


def test_spatial_only_ablation_has_no_frequency_input_and_runs(tmp_path, ms_flair):
    path = _train_tiny(tmp_path, "tiny-spatial", "--no-frequency", "--steps", "10", *TINY_3D)
    bundle = load_model(path)
    assert not bundle.uses_frequency and bundle.networks["unified"].down[0][0].in_channels == 1
    image, affine, brain = ms_flair
    session = Session(bundle, image, affine, brain, policy="itermask2", device="cpu")
    session.step()
    session.step()
    assert session.current.mask.sum() < session.brain_voxels


def _case_folder(folder, label: np.ndarray, affine) -> None:
    folder.mkdir()
    os.symlink(MS / "FLAIR.nii.gz", folder / "FLAIR.nii.gz")
    write_nifti(folder / "lesion_mask.nii.gz", label.astype(np.uint8), affine)


def test_evaluate_scores_every_method_without_looking_at_labels_for_thresholds(tiny_model_3d, tiny_dae, tmp_path):
    label, affine = read_volume(MS / "lesion_mask.nii.gz")
    cases = tmp_path / "cases"
    cases.mkdir()
    _case_folder(cases / "real_label", label > 0, affine)
    _case_folder(cases / "shifted_label", np.roll(label > 0, 25, axis=1), affine)  # same scan, another label
    out = tmp_path / "report"
    assert main(["evaluate", str(cases), "--model", str(tiny_model_3d), "--model", str(tiny_dae), "--intensity",
                 "--frequency-only", "--calibration-data", str(tiny_model_3d.parent / "cases.csv"),
                 "-o", str(out)]) == 0

    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    methods = ["tiny-flair-3d itermask3d", "tiny-flair-3d frequency only", "tiny-dae", "intensity threshold"]
    assert [r["method"] for r in rows] == methods * 2
    by = {(r["case"], r["method"]): r for r in rows}
    for method in methods:
        real, shifted = by["real_label", method], by["shifted_label", method]
        assert real["threshold"] == shifted["threshold"], f"{method}: a label moved the threshold"
        assert real["scan_score"] == shifted["scan_score"]
        assert real["auroc"] != shifted["auroc"]              # while the scores do follow the label
        assert 0 <= float(real["dice"]) <= float(real["oracle_dice"]) <= 1
        assert float(real["auroc"]) > max(0.5, float(shifted["auroc"]))
    model, dae = load_model(tiny_model_3d), load_model(tiny_dae)
    assert float(by["real_label", "tiny-dae"]["threshold"]) == pytest.approx(dae.calibration.threshold)
    assert float(by["real_label", "intensity threshold"]["threshold"]) == pytest.approx(
        model.calibration.intensity_threshold)
    iterm = by["real_label", "tiny-flair-3d itermask3d"]
    assert float(iterm["threshold"]) == pytest.approx(float(iterm["tau_stop"]))     # the subject's own τ_stop
    for method in methods[:3]:                             # reconstructions are scored over the healthy brain
        assert 0 < float(by["real_label", method]["ssim"]) < 1 and float(by["real_label", method]["psnr_db"]) > 10
    assert by["real_label", "intensity threshold"]["ssim"] == "nan"   # no reconstruction to score

    report = (out / "results.md").read_text()
    assert "ORACLE" in report and all(m in report for m in methods)
    figures = {p.name for p in (out / "figures").iterdir()}
    assert {"real_label_overlay.png", "shifted_label_overlay.png", "dice_vs_lesion_size.png",
            "real_label_tiny-flair-3d_itermask3d_tau.png"} <= figures


def test_a_labelled_cases_brain_mask_is_placed_by_its_geometry_not_its_shape(tmp_path):
    from itermask_evaluation.cases import find_cases

    label, affine = read_volume(MS / "lesion_mask.nii.gz")
    image = np.asarray(read_volume(MS / "FLAIR.nii.gz")[0])
    _case_folder(tmp_path / "case", label > 0, affine)
    shifted = affine.copy()
    shifted[:3, 3] += 10 * affine[:3, 0]  # the same shape, 10 voxels further along the first axis
    write_nifti(tmp_path / "case" / "brainmask.nii.gz", (image != 0).astype(np.uint8), shifted)
    volumes = find_cases([tmp_path / "case"], "FLAIR", "lesion_mask", "brainmask")[0].read()
    expected = np.zeros(image.shape, bool)
    expected[10:] = image[:-10] != 0
    assert ((volumes.brain > 0) == expected).all()


def test_evaluate_says_what_is_missing(tmp_path, capsys):
    case = tmp_path / "case"
    case.mkdir()
    os.symlink(MS / "FLAIR.nii.gz", case / "FLAIR.nii.gz")
    assert main(["evaluate", str(case), "--model", "flair-3d", "-o", str(tmp_path / "out")]) == 2
    assert "has FLAIR.nii.gz but no lesion_mask file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
