"""What a hostile user does to ``itermask segment`` and the Python API (issue 13): each case ends in a one-line error
before the expensive work, or in a correct result. Real files throughout (nibabel NIfTI, pynrrd NRRD, SimpleITK
MetaImage, scanner DICOM), real processes where a signal, a second process or a file system is involved."""
from __future__ import annotations

import csv
import fcntl
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import torch

from itermask import ItermaskError, ModelBundle, Session, load_model
from itermask.cli import json_safe, main
from itermask.cohort import partial_folder, remove_stale_partials, write_summary
from itermask.io import read_volume
from itermask.metadata import Calibration
from itermask.preprocess import mask_on_image_grid
from itermask.rules import reconstruction_error
from itermask_training.config import TrainConfig

from conftest import MS, brats

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def save_bundle(path: Path, **policy) -> Path:
    """A real bundle file with untrained (seeded) networks: everything but the quality of the result is real, and a
    run takes seconds. ``policy`` overrides its policy settings (3 iterations at most by default)."""
    metadata = TrainConfig(source="", output="", name="untrained", modality="FLAIR", channels=(4, 8),
                           spacing_mm=6.0, size=32).metadata()
    metadata = replace(metadata, policy=replace(metadata.policy, **{"max_iterations": 3, **policy}),
                       calibration=Calibration(tau=0.5, threshold=1.0))
    torch.manual_seed(0)
    return ModelBundle.create(metadata).save(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_bundle(tmp_path_factory.mktemp("model") / "untrained.pt")


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def halved(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A real scan at half resolution (every other voxel), so runs stay short."""
    image, affine = read_volume(path)
    return np.asarray(image, np.float32)[::2, ::2, ::2], affine @ np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """The MS patient's skull-stripped FLAIR at 2 mm, as a NIfTI file."""
    return write_nifti(tmp_path_factory.mktemp("scans") / "ms.nii.gz", *halved(MS / "FLAIR.nii.gz"))


def itermask(capsys, *args) -> tuple[int, str, str]:
    """``itermask <args>`` in this process: exit status, stdout, stderr."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *phrases: str) -> None:
    lines = err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("itermask: error:"), err
    for phrase in phrases:
        assert phrase in lines[0], err


def segment(capsys, model, *args):
    return itermask(capsys, "segment", *args, "--model", model, "--device", "cpu")


def summary(out: Path) -> list[dict]:
    with open(out / "summary.csv") as handle:
        return list(csv.DictReader(handle))


# --- 2. same-stem inputs ------------------------------------------------------------------------------------------

def test_inputs_with_the_same_stem_get_distinct_folders_and_skip_existing_sees_each(model, small, tmp_path, capsys):
    image, affine = read_volume(small)
    a = write_nifti(tmp_path / "a" / "scan.nii.gz", image, affine)
    b = write_nifti(tmp_path / "b" / "scan.nii.gz", image, affine)
    lps = np.diag([-1, -1, 1, 1]) @ affine
    nrrd.write(str(tmp_path / "b" / "scan.nrrd"), image,
               {"space": "left-posterior-superior", "space directions": lps[:3, :3].T, "space origin": lps[:3, 3]})
    out = tmp_path / "out"
    code, _, err = segment(capsys, model, a, b, tmp_path / "b" / "scan.nrrd", "-o", out)
    assert code == 0, err
    names = ["a_scan", "b_scan_nii_gz", "b_scan_nrrd"]
    assert sorted(p.parent.name for p in out.glob("*/report.json")) == names
    assert [Path(r["output"]).name for r in summary(out)] == names
    assert all(r["status"] == "ok" for r in summary(out))
    code, text, _ = segment(capsys, model, a, b, tmp_path / "b" / "scan.nrrd", "-o", out, "--skip-existing")
    assert code == 0 and "skipped 3 already segmented" in text


# --- 3. and 9. brain masks: geometry, not shape; an all-ones mask ------------------------------------------------

def test_a_mask_of_the_same_shape_on_a_shifted_grid_is_used_where_it_lies(tmp_path):
    image, affine = read_volume(MS / "FLAIR.nii.gz")
    brain = (np.asarray(image) != 0).astype(np.uint8)
    shifted = affine.copy()
    shifted[:3, 3] += 15 * affine[:3, 0]  # 15 voxels (15 mm) along the first axis
    write_nifti(tmp_path / "mask.nii.gz", brain, shifted)
    on_scan = mask_on_image_grid(*read_volume(tmp_path / "mask.nii.gz"), brain.shape, affine)
    expected = np.zeros_like(brain)
    expected[15:] = brain[:-15]
    assert (on_scan == expected).all() and not (on_scan == brain).all()


def test_a_mask_on_another_grid_is_resampled_and_one_elsewhere_is_refused(model, small, tmp_path, capsys):
    full, affine = read_volume(MS / "FLAIR.nii.gz")
    write_nifti(tmp_path / "fine_mask.nii.gz", (np.asarray(full) != 0).astype(np.uint8), affine)
    image, small_affine = read_volume(small)
    on_scan = mask_on_image_grid(*read_volume(tmp_path / "fine_mask.nii.gz"), image.shape, small_affine) > 0
    brain = image != 0
    assert 2 * (on_scan & brain).sum() / (on_scan.sum() + brain.sum()) > 0.97

    far = affine.copy()
    far[:3, 3] += 1000.0
    write_nifti(tmp_path / "far_mask.nii.gz", (np.asarray(full) != 0).astype(np.uint8), far)
    code, _, err = segment(capsys, model, small, "--brain-mask", tmp_path / "far_mask.nii.gz", "-o", tmp_path / "out")
    assert_one_line_error(code, err, "does not overlap")
    assert not (tmp_path / "out").exists()


def test_an_all_ones_mask_on_a_scan_with_skull_is_refused_like_no_mask(model, tmp_path, capsys):
    image, affine = halved(brats("0003"))  # z-scored with a non-zero background: not skull-stripped
    scan = write_nifti(tmp_path / "head.nii.gz", image, affine)
    ones = write_nifti(tmp_path / "ones.nii.gz", np.ones(image.shape, np.uint8), affine)
    code, _, without = segment(capsys, model, scan, "-o", tmp_path / "out")
    assert_one_line_error(code, without, "larger than a brain", "--skull-strip", "--brain-mask")
    code, _, err = segment(capsys, model, scan, "--brain-mask", ones, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "larger than a brain", "covers 100% of the field of view", "--skull-strip")


# --- 4. non-finite anomaly maps -----------------------------------------------------------------------------------

def test_float64_data_beyond_float32_gives_the_result_of_the_unscaled_scan(model, small):
    image, affine = read_volume(small)
    bundle = load_model(model)
    plain = Session(bundle, image, affine, device="cpu").run()
    huge = Session(bundle, np.asarray(image, np.float64) * 1e300, affine, device="cpu").run()
    assert np.isfinite(huge.anomaly_map).all()
    assert np.allclose(huge.anomaly_map, plain.anomaly_map, rtol=1e-3, atol=1e-4)
    assert (huge.mask != plain.mask).mean() < 1e-4


def test_one_extreme_voxel_gives_a_finite_map_and_a_valid_report(model, small, tmp_path, capsys):
    image, affine = read_volume(small)
    image = np.array(image)
    image[tuple(np.argwhere(image > 0)[len(np.argwhere(image > 0)) // 2])] = 1e30
    scan = write_nifti(tmp_path / "hot.nii.gz", image, affine)
    code, _, err = segment(capsys, model, scan, "-o", tmp_path / "out")
    assert code == 0, err
    amap = np.asanyarray(nib.load(tmp_path / "out" / "hot" / "anomaly_map.nii.gz").dataobj)
    assert np.isfinite(amap).all()

    def no_bare_constants(name):
        raise AssertionError(f"report.json holds bare {name}")
    json.loads((tmp_path / "out" / "hot" / "report.json").read_text(), parse_constant=no_bare_constants)


def test_squared_errors_never_overflow_and_reports_never_hold_nan():
    error = reconstruction_error(torch.tensor([3e38, 1.0]), torch.tensor([-3e38, 3.0]), torch.tensor([True, True]))
    assert torch.isfinite(error).all() and error[1] == 4.0
    assert json.dumps(json_safe({"r2": math.nan, "path": [1.0, math.inf]}), allow_nan=False) == \
        '{"r2": null, "path": [1.0, null]}'


# --- 5. folders that hold no scans --------------------------------------------------------------------------------

def dicom_files() -> list[Path]:
    """Two real scanner DICOM files that nibabel ships for its own tests."""
    return sorted((Path(nib.__file__).parent / "tests" / "data").glob("[01].dcm"))


def test_empty_scanless_and_dicom_folders_are_one_line_errors(model, tmp_path, capsys):
    empty, other, dicom = tmp_path / "empty", tmp_path / "other", tmp_path / "dicom"
    for folder in (empty, other, dicom / "series1"):
        folder.mkdir(parents=True)
    (other / "notes.txt").write_text("no scans here")
    for i, file in enumerate(dicom_files()):
        shutil.copy(file, dicom / "series1" / f"IM{i:04d}")  # scanner files often have no suffix
    for folder, phrase in ((empty, "is empty"), (other, "holds no scans"),
                           (dicom, 'series 12 "CBU_DTI_64D_1A": it is a Siemens mosaic')):
        code, _, err = segment(capsys, model, folder, "-o", tmp_path / "out")
        assert_one_line_error(code, err, phrase)
    code, _, err = segment(capsys, model, dicom / "series1" / "IM0000", "-o", tmp_path / "out")
    assert_one_line_error(code, err, 'is one slice of DICOM series 12 "CBU_DTI_64D_1A": give the folder')


# --- 6. output-side OS errors -------------------------------------------------------------------------------------

def test_an_output_path_that_is_a_file_is_refused_before_any_work(model, small, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    code, _, err = segment(capsys, model, small, "-o", tmp_path / "taken")
    assert_one_line_error(code, err, "is a file")
    code, _, err = segment(capsys, model, small, "-o", tmp_path / "taken" / "out")
    assert_one_line_error(code, err, "is a file")


def test_in_a_cohort_run_an_output_name_too_long_fails_alone_and_is_listed(model, small, tmp_path, capsys):
    long = "x" * 240 + ".nii.gz"  # legal names; told apart by their folders, their outputs' names are not
    for folder in ("a" * 20, "b" * 20):
        (tmp_path / folder).mkdir()
        shutil.copy(small, tmp_path / folder / long)
    shutil.copy(small, tmp_path / "good.nii.gz")
    out = tmp_path / "out"
    code, _, err = segment(capsys, model, tmp_path / "good.nii.gz", tmp_path / ("a" * 20) / long,
                           tmp_path / ("b" * 20) / long, "-o", out)
    assert code == 1 and err.count("File name too long") == 2, err
    rows = {Path(r["output"]).name: r for r in summary(out)}
    assert rows["good"]["status"] == "ok" and (out / "good" / "report.json").exists()
    for name in (f"{'a' * 20}_{'x' * 240}", f"{'b' * 20}_{'x' * 240}"):
        assert rows[name]["status"] == "failed" and "File name too long" in rows[name]["error"]
    assert not list(out.glob(".*.partial"))


def test_an_input_name_of_250_bytes_gets_its_output_folder_under_that_name(model, small, tmp_path, capsys):
    stem = "x" * 200 + "é" * 21 + "x"  # 243 bytes; the partial folder's shorter name may cut an "é" in two
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    shutil.copy(small, cohort / f"{stem}.nii.gz")
    assert len(os.fsencode(f"{stem}.nii.gz")) == 250
    out = tmp_path / "out"
    code, _, err = segment(capsys, model, cohort, "-o", out)
    assert code == 0, err
    assert [p.name for p in out.iterdir() if p.is_dir()] == [stem] and (out / stem / "report.json").is_file()
    assert [Path(r["output"]).name for r in summary(out)] == [stem]


def in_own_mount_namespace(tmp_path: Path, mount_options: str, command: str) -> subprocess.CompletedProcess:
    """``command`` (sh) in a private mount namespace where ``tmp_path/fs`` is a fresh tmpfs with ``mount_options``:
    a real file system that is read-only or full, and gone when the command ends."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("unprivileged mount namespaces are not available here")
    (tmp_path / "fs").mkdir()
    script = f'mount -t tmpfs -o {mount_options} tmpfs "{tmp_path}/fs" && {command}'
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, env=ENV,
                          timeout=600)


def test_a_read_only_output_is_refused_before_any_work(model, small, tmp_path):
    cli = f'"{sys.executable}" -m itermask.cli segment "{small}" --model "{model}" --device cpu'
    proc = in_own_mount_namespace(tmp_path, "ro,size=1m", f'{cli} -o "{tmp_path}/fs/out"')
    assert_one_line_error(proc.returncode, proc.stderr, "read-only")


def test_a_full_disk_fails_each_scan_in_one_line_and_leaves_no_partial_folder(model, small, tmp_path):
    cli = f'"{sys.executable}" -m itermask.cli segment "{small}" "{tmp_path / "b.nii.gz"}" --model "{model}" ' \
          f'--device cpu -o "{tmp_path}/fs/out"'
    shutil.copy(small, tmp_path / "b.nii.gz")
    proc = in_own_mount_namespace(tmp_path, "size=48k", f'{cli}; echo "exit $?"; ls -A "{tmp_path}/fs/out"')
    errors = [line for line in proc.stderr.splitlines() if line.startswith("itermask: error:")]
    assert "exit 1" in proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    assert sum("No space left on device" in line for line in errors) == 2, proc.stderr
    assert ".partial" not in proc.stdout


# --- 7. partial folders left by a killed run ----------------------------------------------------------------------

def test_a_killed_runs_partial_folder_is_removed_next_time_but_a_live_one_is_kept(small, tmp_path):
    endless = save_bundle(tmp_path / "endless.pt", max_iterations=100_000, min_shrink=0.0)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "itermask.cli", "segment", str(small), "--model", str(endless), "--device", "cpu",
            "-o", str(out)]
    shutil.copy(small, tmp_path / "other.nii.gz")
    live = subprocess.Popen(args, env=ENV, stderr=subprocess.DEVNULL)
    killed = subprocess.Popen(args[:4] + [str(tmp_path / "other.nii.gz")] + args[5:], env=ENV,
                              stderr=subprocess.DEVNULL)
    try:
        partials = wait_for(lambda: sorted(out.glob(".*.partial")) if len(list(out.glob(".*.partial"))) == 2 else None)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        for folder in partials:  # both past the grace period a fresh folder gets before it is locked
            os.utime(folder, (time.time() - 60, time.time() - 60))
        removed = remove_stale_partials(out)
        assert [p.name for p in removed] == [p.name for p in partials if p.name.startswith(".other.")]
        assert [p for p in partials if p.exists()] == [p for p in partials if p.name.startswith(".ms.")]
    finally:
        live.kill()
        killed.kill()
        live.wait()


def test_a_run_killed_with_sigkill_and_rerun_at_once_leaves_no_partial_folder(model, small, tmp_path, capsys):
    endless = save_bundle(tmp_path / "endless.pt", max_iterations=100_000, min_shrink=0.0)
    out = tmp_path / "out"
    killed = endless_run(small, endless, out)
    try:
        wait_for(lambda: list(out.glob(".ms.*.partial")))
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    code, _, err = segment(capsys, model, small, "-o", out, "--skip-existing")  # at once: the partial is seconds old
    assert code == 0, err
    assert not list(out.glob(".*.partial")) and (out / "ms" / "report.json").is_file()

    # Killed while a run goes on: its partial folder was locked when that run began, and is gone when it ends.
    shutil.copy(small, tmp_path / "other.nii.gz")
    writer = endless_run(tmp_path / "other.nii.gz", endless, out)
    wait_for(lambda: list(out.glob(".other.*.partial")))

    def kill_the_writer_once_the_run_has_begun():
        wait_for(lambda: list(out.glob(".ms.*.partial")))  # made after the run's first sweep
        writer.send_signal(signal.SIGKILL)
        writer.wait()

    killer = threading.Thread(target=kill_the_writer_once_the_run_has_begun)
    killer.start()
    try:
        code, _, err = segment(capsys, model, small, "-o", out)
    finally:
        killer.join()
        writer.kill()
        writer.wait()
    assert code == 0, err
    assert not list(out.glob(".*.partial"))


def test_the_sweep_waits_for_a_writer_between_making_its_folder_and_locking_it(tmp_path):
    """Writers make and lock their partial folders under a shared lock on the output folder: a sweep (exclusive)
    never sees a folder in between, so it needs no grace time for young folders. It leaves what no writer made."""
    out = tmp_path / "out"
    out.mkdir()
    handle = os.open(out, os.O_RDONLY)
    fcntl.flock(handle, fcntl.LOCK_SH)  # as partial_folder holds it between mkdtemp and locking the new folder
    unlocked = out / ".scan.abcd1234.partial"
    unlocked.mkdir()
    sweep = threading.Thread(target=remove_stale_partials, args=(out,))
    sweep.start()
    sweep.join(1.0)
    assert sweep.is_alive() and unlocked.exists()
    os.close(handle)
    sweep.join(10.0)
    assert not sweep.is_alive() and not unlocked.exists()

    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "data.txt").write_text("keep")
    (out / ".link.partial").symlink_to(tmp_path / "precious")  # named like a partial folder, but nobody's
    (out / ".file.partial").write_text("a file")
    assert remove_stale_partials(out) == []
    assert (tmp_path / "precious" / "data.txt").read_text() == "keep" and (out / ".file.partial").exists()


def endless_run(scan: Path, model: Path, out: Path) -> subprocess.Popen:
    """``itermask segment scan`` in a process of its own, with a model that never converges."""
    return subprocess.Popen([sys.executable, "-m", "itermask.cli", "segment", str(scan), "--model", str(model),
                             "--device", "cpu", "-o", str(out)], env=ENV, stderr=subprocess.DEVNULL)


def wait_for(found, seconds: float = 300.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def test_the_summary_ignores_partial_folders_and_survives_a_truncated_report(model, small, tmp_path, capsys):
    out = tmp_path / "out"
    assert segment(capsys, model, small, "-o", out)[0] == 0
    shutil.copytree(out / "ms", out / ".ms.k1l2.partial")  # complete, but never renamed into place
    shutil.copytree(out / "ms", out / ".ms.x9y8.partial")
    (out / ".ms.x9y8.partial" / "report.json").write_text('{"input": "cut off')
    write_summary(out)
    assert [Path(r["output"]).name for r in summary(out)] == ["ms"]

    shutil.copytree(out / "ms", out / "broken")
    (out / "broken" / "report.json").write_text('{"input": "cut off')
    write_summary(out)
    rows = {Path(r["output"]).name: r for r in summary(out)}
    assert rows["ms"]["status"] == "ok" and rows["broken"]["status"] == "failed"
    assert "unreadable report.json" in rows["broken"]["error"]


def test_a_partial_folder_is_removed_when_its_block_fails(tmp_path):
    with pytest.raises(RuntimeError), partial_folder(tmp_path, "scan") as partial:
        assert partial.is_dir() and partial.name.startswith(".scan.")
        raise RuntimeError
    assert not list(tmp_path.iterdir())


# --- 8. seeds, τ and thresholds, seek, complex images, NRRD geometry ----------------------------------------------

def test_seeds_out_of_range_are_refused(model, small, tmp_path, capsys):
    for command in ("segment", "demo"):  # refused while reading the command line, before any scan is read
        err = refused(capsys, command, *([small, "--model", model] if command == "segment" else []),
                      "--seed", "99999999999999999999", "-o", tmp_path / "out")
        assert "--seed" in err and "must be a whole number from 0 to" in err, err
        assert not (tmp_path / "out").exists()
    image, affine = read_volume(small)
    for seed in (2**62, -1, 1.5, True):
        with pytest.raises(ItermaskError, match="seed"):
            Session(load_model(model), image, affine, seed=seed, device="cpu")


def test_nan_tau_and_thresholds_are_refused_and_seek_errors_leave_the_session_usable(model, small):
    image, affine = read_volume(small)
    bundle = load_model(model)
    for kwargs in ({"tau": math.nan}, {"threshold": math.nan}, {"tau": math.inf}):
        with pytest.raises(ItermaskError, match="finite"):
            Session(bundle, image, affine, device="cpu", **kwargs)
    session = Session(bundle, image, affine, device="cpu")
    first = session.step()
    for bad in (lambda: session.set_tau(math.nan), lambda: setattr(session, "threshold", math.nan),
                lambda: session.result(threshold=math.nan), lambda: session.seek(1.0),
                lambda: session.seek(5), lambda: session.seek("0")):
        with pytest.raises(ItermaskError):
            bad()
    assert session.current is first and session.tau == 0.5 and session.threshold == 1.0
    assert session.step().index == 1 and session.seek(0) is first


def test_a_tau_of_zero_or_below_is_refused_and_changes_nothing(model, small):
    image, affine = read_volume(small)
    session = Session(load_model(model), image, affine, device="cpu")
    first = session.step()
    for tau in (0.0, -1.0, -math.inf, "abc", None):
        with pytest.raises(ItermaskError, match="τ must be"):
            session.set_tau(tau)
    assert session.tau == 0.5 and session.tau_from_user is None and session.current is first
    session.set_tau(1e-6)
    assert session.tau == 1e-6


def test_a_bundle_with_a_nan_calibration_is_refused(tmp_path):
    path = save_bundle(tmp_path / "nan.pt")
    raw = torch.load(path, weights_only=True)
    raw["itermask_bundle"] = raw["itermask_bundle"].replace('"tau": 0.5', '"tau": NaN')
    torch.save(raw, path)
    with pytest.raises(ItermaskError, match="calibration tau is nan"):
        load_model(path)


def test_complex_images_and_nrrd_without_space_directions_are_refused(model, small, tmp_path, capsys):
    image, affine = read_volume(small)
    complex_scan = write_nifti(tmp_path / "complex.nii.gz", image.astype(np.complex64) * (1 + 1j), affine)
    code, _, err = segment(capsys, model, complex_scan, "-o", tmp_path / "out")
    assert_one_line_error(code, err, "complex-valued")
    nrrd.write(str(tmp_path / "bare.nrrd"), image)  # no space, no space directions
    code, _, err = segment(capsys, model, tmp_path / "bare.nrrd", "-o", tmp_path / "out")
    assert_one_line_error(code, err, "space directions")


# --- MetaImage ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".mha", ".mhd"])
@pytest.mark.parametrize("source", [MS / "FLAIR.nii.gz", brats("0003")], ids=["LAS", "LPS"])
def test_metaimage_reads_as_the_same_volume_and_geometry(tmp_path, source, suffix):
    import SimpleITK as sitk

    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(sitk.ReadImage(str(source)), str(path))
    image, affine = read_volume(path)
    reference, reference_affine = read_volume(source)
    assert image.shape == reference.shape and np.array_equal(image, reference)
    assert np.allclose(affine, reference_affine, atol=1e-4)


def test_the_core_imports_without_simpleitk_and_says_what_a_metaimage_needs(tmp_path):
    code = ("import sys; sys.modules['SimpleITK'] = None\n"
            "import itermask, itermask.cli, itermask.io\n"
            "try:\n    itermask.io.read_volume(sys.argv[1])\nexcept itermask.ItermaskError as e:\n    print(e)\n")
    (tmp_path / "scan.mha").write_bytes(b"ObjectType = Image\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "scan.mha")], capture_output=True, text=True,
                          env=ENV)
    assert proc.returncode == 0 and "needs SimpleITK" in proc.stdout, proc.stderr


# --- numbers and the environment, refused where they enter (issue 25) ---------------------------------------------

TRAIN_NUMBERS = ("--steps", "--batch-size", "--lr", "--size", "--spacing", "--channels", "--checkpoint-every",
                 "--stop-after", "--dae-noise-sd", "--seed")
BAD_NUMBERS = ("0", "-1", "nan", "abc", "1e999")
TOO_LARGE_A_SEED = str(2**32)


def refused(capsys, *args) -> str:
    """``itermask <args>`` must stop while reading its command line: exit status 2 and one ``itermask: error:``
    line; returns the line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert_one_line_error(exit.value.code, err)
    return err


@pytest.mark.parametrize("option, value", [(option, value) for option in TRAIN_NUMBERS for value in BAD_NUMBERS
                                           if (option, value) != ("--seed", "0")]
                         + [("--seed", TOO_LARGE_A_SEED), ("--lr", "1e300")])
def test_train_refuses_each_number_out_of_range_before_reading_any_data(option, value, tmp_path, capsys):
    err = refused(capsys, "train", "--data", tmp_path / "nothing.csv", "-o", tmp_path / "out", "--name", "t",
                  "--modality", "FLAIR", option, value)
    assert option in err and "must be" in err and repr(value) in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", BAD_NUMBERS[1:] + (TOO_LARGE_A_SEED,))
@pytest.mark.parametrize("command", ["calibrate", "evaluate"])
def test_calibrate_and_evaluate_refuse_a_seed_out_of_range(command, value, tmp_path, capsys):
    where = ["--data", tmp_path / "nothing.csv"] if command == "calibrate" else [tmp_path / "nothing"]
    err = refused(capsys, command, *where, "--model", "nothing.pt", "-o", tmp_path / "out", "--seed", value)
    assert "--seed" in err and f"must be a whole number from 0 to {2**32 - 1}, got {value!r}" in err, err


@pytest.mark.parametrize("environment", [
    {"RANK": "3", "WORLD_SIZE": "2"}, {"RANK": "-1"}, {"RANK": "abc"}, {"RANK": "1.0", "WORLD_SIZE": "2"},
    {"WORLD_SIZE": "0"}, {"WORLD_SIZE": "nan"}, {"WORLD_SIZE": ""}, {"LOCAL_RANK": "-1"},
    {"LOCAL_RANK": "2", "WORLD_SIZE": "2"}, {"LOCAL_RANK": "x"}],
    ids=lambda environment: " ".join(f"{name}={value}" for name, value in environment.items()))
def test_torchrun_variables_out_of_range_are_one_line_errors(environment, model, small, tmp_path, capsys, monkeypatch):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    variable = next(iter(environment))
    args = ["train", "--data", tmp_path / "nothing.csv", "-o", tmp_path / "out", "--name", "t", "--modality", "FLAIR",
            "--device", "cpu"]
    code, _, err = itermask(capsys, *args)
    assert_one_line_error(code, err, variable)
    if "LOCAL_RANK" not in environment:  # segmenting does not use it
        code, _, err = segment(capsys, model, small, "-o", tmp_path / "out")
        assert_one_line_error(code, err, variable)
    assert not (tmp_path / "out").exists()
