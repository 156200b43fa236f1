"""Training: data from a manifest, lesion exclusion, checkpoints and an exact resume."""
import os

import pytest
import torch

from itermask import ModelBundle
from itermask.cases import read_cases, read_manifest
from itermask.cli import main
from itermask.metadata import Grid
from itermask_training.data import load_training_set

from conftest import MS, brats

GRID = Grid(spacing_mm=6.0, min_size=(1, 32, 32))


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
    assert a.calibration == b.calibration and a.calibration.tau > 0
    assert a.metadata.training["data"] == [os.path.relpath(MS / "FLAIR.nii.gz", straight)]


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


def with_data(args, data):
    """``train_args`` with another ``--data``."""
    args[args.index("--data") + 1] = str(data)
    return args


def checkpointed(folder, *extra):
    """A run in ``folder`` stopped after one step: a checkpoint and no bundle."""
    assert main(train_args(folder, "--stop-after", "1", *extra)) == 0
    assert (folder / "checkpoint.ckpt").exists()
    return folder / "checkpoint.ckpt"


def one_line_error(capsys, args, *phrases):
    """Run ``itermask <args>``; it must fail with one ``itermask: error:`` line holding every phrase."""
    capsys.readouterr()  # what earlier calls printed
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("itermask: error:"), err
    for phrase in phrases:
        assert phrase in err, err
    return err


def test_resuming_another_run_is_refused_naming_the_difference(tmp_path, capsys):
    run = tmp_path / "run"
    checkpoint = checkpointed(run)
    before = checkpoint.read_bytes()
    other_data = tmp_path / "other"
    other_data.mkdir()
    (other_data / "cases.csv").write_text(manifest(run).read_text().replace(str(MS / "FLAIR.nii.gz"),
                                                                             str(brats("0004"))))
    for change, phrase in ((["--lr", "0.002"], "lr 0.001 → 0.002"), (["--seed", "1"], "seed 0 → 1"),
                           (["--name", "u"], "name 't' → 'u'"), (["--channels", "8", "16"], "channels [4, 8]"),
                           (["--dims", "3"], "dims 2 → 3"), (["--init-from", "x.pt"], "init_from None → 'x.pt'")):
        one_line_error(capsys, train_args(run, *change), "belongs to another training run", phrase, "--restart")
    one_line_error(capsys, with_data(train_args(run), other_data / "cases.csv"),
                   "training data (1 file(s) new or changed, 1 no longer used", "--restart")
    assert checkpoint.read_bytes() == before and not (run / "t.pt").exists()


def test_a_truncated_checkpoint_is_refused_and_restart_starts_over(tmp_path, capsys):
    checkpoint = checkpointed(tmp_path)
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    one_line_error(capsys, train_args(tmp_path), "cannot be read", "--restart")
    assert main(train_args(tmp_path, "--restart", "--stop-after", "1")) == 0
    assert torch.load(checkpoint, weights_only=True)["step"] == 1


def test_training_input_errors_are_one_line_before_any_preparation(tmp_path, capsys):
    good = manifest(tmp_path / "data").read_text()
    cases = tmp_path / "data" / "cases.csv"
    for text, phrase in ((good.replace("image,", "scan,", 1), "the columns must be"),
                         (good.replace("brain_mask,", "brainmask,", 1), "the columns must be"),
                         (good.replace(str(brats("0005")), str(tmp_path / "gone.nii.gz")),
                          "1 listed file(s) not found, first " + str(tmp_path / "gone.nii.gz"))):
        cases.write_text(text)
        one_line_error(capsys, with_data(train_args(tmp_path / "out"), cases), phrase)
    one_line_error(capsys, with_data(train_args(tmp_path / "out"), tmp_path / "missing.csv"),
                   "missing.csv is neither a folder of scans nor a CSV manifest")
    assert not (tmp_path / "out" / "preprocessed").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_a_gpu_that_is_not_there_is_a_one_line_error(tmp_path, capsys):
    one_line_error(capsys, train_args(tmp_path, "--device", "cuda"), "--device cuda", "no CUDA GPU")
    assert not (tmp_path / "checkpoint.ckpt").exists()


def test_calibrate_measures_again_what_training_measured(tmp_path, capsys):
    assert main(train_args(tmp_path)) == 0
    trained = tmp_path / "t.pt"
    capsys.readouterr()
    assert main(["calibrate", "--model", str(trained), "--data", str(tmp_path / "cases.csv"),
                 "-o", str(tmp_path / "again.pt")]) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {tmp_path / 'again.pt'}")
    a, b = ModelBundle.load(trained), ModelBundle.load(tmp_path / "again.pt")
    assert a.calibration == b.calibration and a.calibration.threshold > 0
    assert b.metadata.training["calibration_data"] == a.metadata.training["calibration_data"]


def test_a_model_grid_too_fine_for_memory_is_a_one_line_error(tmp_path, capsys):
    one_line_error(capsys, train_args(tmp_path, "--spacing", "0.01"), "0.01 mm model grid", "use a coarser spacing")
    assert not (tmp_path / "checkpoint.ckpt").exists()


def test_training_stops_at_the_first_non_finite_loss_without_saving(tmp_path, capsys):
    capsys.readouterr()
    assert main(train_args(tmp_path, "--method", "dae", "--dae-noise-sd", "1e300")) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the progress bar's line, then the error
    assert [line for line in err if "error" in line] == err[-1:], err
    assert err[-1].startswith("itermask: error: training diverged at step 1: loss {'denoiser': nan}"), err
    assert not (tmp_path / "checkpoint.ckpt").exists() and not (tmp_path / "t.pt").exists()
