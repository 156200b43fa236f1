"""``itermask segment`` and ``itermask models`` on real files, as the CLI contract in ARCHITECTURE.md says."""
import json
import subprocess
import sys

import nibabel as nib
import nrrd
import numpy as np
import pytest

from itermask.cli import main

from conftest import MS, brats


def run_cli(*args):
    """The installed entry point in a fresh interpreter: exit status, stdout, stderr."""
    proc = subprocess.run([sys.executable, "-m", "itermask.cli", *map(str, args)], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def test_segment_writes_the_contract_files_on_the_input_grid(tiny_model, tmp_path):
    code, out, err = run_cli("segment", brats("0006"), "--brain-mask", brats("0006", "brainmask"),
                             "--modality", "FLAIR", "--model", tiny_model, "-o", tmp_path, "--device", "cpu")
    assert code == 0, err
    folder = tmp_path / "Flair_subtrMeanDivStd"
    source = nib.load(brats("0006"))
    for name, dtype in (("mask.nii.gz", np.uint8), ("anomaly_map.nii.gz", np.float32)):
        written = nib.load(folder / name)
        assert written.shape == source.shape
        assert np.allclose(written.affine, source.affine)
        assert written.get_data_dtype() == dtype
    mask = np.asanyarray(nib.load(folder / "mask.nii.gz").dataobj)
    assert set(np.unique(mask)) <= {0, 1}
    brain = np.asanyarray(nib.load(brats("0006", "brainmask")).dataobj) > 0.5
    assert not (mask.astype(bool) & ~brain).any()
    report = json.loads((folder / "report.json").read_text())
    assert report["model"] == "tiny-flair" and report["policy"] == "itermask2" and report["seed"] == 0
    assert report["iterations"][0]["mask_fraction"] == 1.0
    assert {"tau", "tau_stop", "threshold", "scan_score", "seconds"} <= set(report)
    assert (folder / "iterations.png").stat().st_size > 10_000
    assert not list(tmp_path.glob(".*partial"))


def test_nrrd_input_in_lps_gives_output_on_its_grid(tiny_model, tmp_path):
    image = nib.load(MS / "FLAIR.nii.gz")
    data = np.asanyarray(image.dataobj).astype(np.float32)
    lps = np.diag([-1, -1, 1, 1]) @ image.affine
    header = {"space": "left-posterior-superior", "space directions": lps[:3, :3].T, "space origin": lps[:3, 3]}
    nrrd.write(str(tmp_path / "ms.nrrd"), data, header)
    assert main(["segment", str(tmp_path / "ms.nrrd"), "--model", str(tiny_model), "-o", str(tmp_path / "out"),
                 "--device", "cpu"]) == 0
    mask = nib.load(tmp_path / "out" / "ms" / "mask.nii.gz")
    assert mask.shape == data.shape and np.allclose(mask.affine, image.affine)


def write(path, array, affine=np.eye(4)):
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: write(d / "slice.nii.gz", np.ones((40, 40), np.float32)), "expected a 3D volume, got 2D"),
    (lambda d: write(d / "series.nii.gz", np.ones((20, 20, 20, 4), np.float32)), "got 4D"),
    (lambda d: write(d / "nan.nii.gz", np.full((20, 20, 20), np.nan, np.float32)), "NaN"),
    (lambda d: (d / "broken.nii.gz").write_bytes(b"not an image") and d / "broken.nii.gz", "cannot read"),
    (lambda d: d / "missing.nii.gz", "file not found"),
])
def test_bad_input_exits_non_zero_with_one_line_and_no_output(tiny_model, tmp_path, make, message):
    path = make(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli("segment", path, "--model", tiny_model, "-o", out)
    assert code != 0
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_brain_mask_problems_and_unknown_names(tiny_model, tmp_path):
    image = write(tmp_path / "scan.nii.gz", np.pad(np.ones((20, 20, 20), np.float32), 10))
    empty = write(tmp_path / "empty.nii.gz", np.zeros((40, 40, 40), np.uint8))
    away = np.eye(4)
    away[:3, 3] = 100.0  # the scan's shape, 100 mm away
    elsewhere = write(tmp_path / "elsewhere.nii.gz", np.ones((40, 40, 40), np.uint8), away)
    for args, message in (
        (["--brain-mask", empty, "--model", tiny_model], "brain mask is empty"),
        (["--brain-mask", elsewhere, "--model", tiny_model], "brain mask does not overlap the image"),
        (["--modality", "PET"], "unknown modality 'PET'"),
        (["--model", "nonexistent"], "unknown model 'nonexistent'"),
        (["--model", tiny_model, "--modality", "T2"], "is for FLAIR, not T2"),
    ):
        code, _, err = run_cli("segment", image, "-o", tmp_path / "out", *args)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_models_lists_bundles_from_the_model_path(tiny_model, monkeypatch, capsys):
    monkeypatch.setenv("ITERMASK_MODEL_PATH", str(tiny_model.parent))
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "tiny-flair" in listing and "FLAIR" in listing
