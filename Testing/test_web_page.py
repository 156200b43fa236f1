"""``itermask web`` in a real browser (headless Chromium driven by Playwright): what a person does on the page, checked
against the CLI and the core voxel for voxel; cancel; one tab at a time; uploads; the worker dies with the server.
(The README's pictures come from ``docs/web/make_screenshots.py``, with the shipped model.)"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import numpy as np
import pytest

from itermask import ModelBundle, Session
from itermask.cli import main
from itermask.errors import ItermaskError
from itermask.example import make_example, write_example
from itermask.io import read_volume

pytest.importorskip("trame_slicer")
pytest.importorskip("playwright")
from web_browser import CHROMIUM, Page, chromium, served  # noqa: E402

if not Path(CHROMIUM).is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

@pytest.fixture(scope="module")
def server(tiny_model):
    """One server for the module, offering (and selecting) the tiny model; the worker computes on the CPU."""
    with served("--model", str(tiny_model), "--device", "cpu", "--max-upload-mb", "2") as (url, process):
        yield url, process


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


@pytest.fixture()
def page(server, browser):
    page = Page(browser, server[0]).opened()
    yield page
    page.page.close()
    time.sleep(0.5)  # the server frees the page for the next test's tab


def read_mask(path: Path) -> np.ndarray:
    return read_volume(path)[0] > 0


def assert_fitted(page, views: int, timeout_s: float = 20.0) -> None:
    """Each view shows the whole scan: its left and right edges are background (a view fitted for another size
    crops the scan). The fit follows the browser's resize of the views, so it is waited for."""
    deadline = time.monotonic() + timeout_s
    while True:
        middles = [page.view_image(n).max(axis=2) for n in range(views)]
        middles = [m[m.shape[0] // 4: 3 * m.shape[0] // 4] for m in middles]  # below the view's corner icons
        cropped = [n for n, m in enumerate(middles) if m[:, :4].max() > 40 or m[:, -4:].max() > 40]
        if not cropped or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not cropped, f"views {cropped} crop the scan"


def test_segment_threshold_apply_paint_continue_and_download_match_the_cli(page, tiny_model, tmp_path):
    page.press("im-load-example", until="s.im_status.includes('Example loaded')")
    assert page.state("im_policy") == "itermask2"  # the tiny model's own default, preselected
    page.press("im-segment", until="s.im_stepped && s.im_status.includes('Converged')")
    before = page.state("im_threshold_raw")
    page.slide("im_threshold-slider", 25)
    threshold = page.settled("im_threshold_raw")  # the raw threshold the outline (and Apply) use
    assert threshold > before
    page.press("im-apply", until="s.im_has_result")
    applied = read_mask(page.download("im-download-nii", tmp_path))

    # The CLI on the same example, model, policy and seed: its anomaly map above the page's threshold.
    scan, brain = write_example(tmp_path / "inputs")
    assert main(["segment", str(scan), "--brain-mask", str(brain), "--model", str(tiny_model), "--policy",
                 "itermask2", "--seed", "0", "--device", "cpu", "-o", str(tmp_path / "cli")]) == 0
    cli_map, cli_affine = read_volume(tmp_path / "cli" / "example_flair" / "anomaly_map.nii.gz")
    assert np.array_equal(applied, cli_map > threshold) and applied.any()
    assert np.allclose(read_volume(page.download("im-download-nii", tmp_path))[1], cli_affine)

    # Paint a stroke across the brain (the view is fitted to the scan: its middle is brain), then continue.
    page.press("im-effect-paint", until="s.im_active_effect === 'paint'")
    edits = page.state("im_edits")
    page.stroke([(0.35, 0.5), (0.5, 0.5), (0.65, 0.45)])
    page.wait(f"s.im_edits > {edits}")
    page.press("im-effect-none", until="s.im_active_effect === 'none'")
    edited = read_mask(page.download("im-download-nii", tmp_path))
    assert (edited & ~applied).sum() > 20 and (applied & ~edited).sum() == 0  # paint only adds
    steps = page.state("im_iterations")
    page.press("im-continue", until=f"s.im_iterations === {steps + 1}")
    page.layout("Three views")
    assert_fitted(page, views=3)
    page.press("im-apply", until="s.im_has_result")
    continued = read_mask(page.download("im-download-nii", tmp_path))
    segmentation = page.download("im-download-seg", tmp_path)
    assert segmentation.name.endswith(".seg.nrrd") and segmentation.stat().st_size > 0

    # The core, in this process: the same session, the edited mask, one step, the same threshold.
    image, brain_mask, _, affine = make_example(0)
    session = Session(ModelBundle.load(tiny_model), image, affine, brain_mask, policy="itermask2", seed=0,
                      device="cpu")
    session.run()
    session.set_mask(edited)
    session.step()
    assert session.current.phase == "edited"
    assert np.array_equal(continued, session.anomaly_map() > threshold)


def test_a_cancelled_run_leaves_the_page_as_it_was(page, tmp_path):
    page.press("im-load-example", until="s.im_status.includes('Example loaded')")
    page.choose("im-policy", "IterMask3D (subject-specific τ)")  # ≈100 steps: cannot end before Cancel
    page.press("im-initialize", until="s.im_ready && s.im_iterations === 0 && !s.im_has_result")
    page.press("im-step", until="s.im_iterations === 1")
    page.press("im-apply", until="s.im_has_result")
    shown = {key: page.state(key) for key in ("im_iterations", "im_iteration", "im_tau", "im_plot",
                                              "im_threshold_label", "im_tau_label")}
    mask = read_mask(page.download("im-download-nii", tmp_path))
    page.press("im-run")
    page.wait(f"s.im_iterations >= {shown['im_iterations'] + 2}")
    page.press("im-cancel", until="s.im_status.includes('Cancelled')")
    assert {key: page.state(key) for key in shown} == shown
    page.press("im-apply", until="s.im_has_result")
    assert np.array_equal(read_mask(page.download("im-download-nii", tmp_path)), mask)


def test_a_second_tab_is_told_the_page_is_in_use_and_gets_it_once_the_first_closes(page, server, browser):
    second = Page(browser, server[0])
    second.page.wait_for_selector("#im-elsewhere")
    assert "open in another browser tab" in second.page.inner_text("#im-elsewhere")
    assert second.page.locator("#im-segment").count() == 0
    page.page.close()
    second.opened()
    second.page.close()


def test_uploads_over_the_limit_are_refused_and_a_scan_is_opened(page, tmp_path):
    scan, _ = write_example(tmp_path)  # ≈ 4 MB: over this server's 2 MB
    page.page.set_input_files("#im-upload", str(scan))
    page.wait("s.im_error.includes('accepts at most 2.0 MB')")
    image, affine = read_volume(scan)
    from itermask.io import write_nifti

    small = tmp_path / "small scan.nii.gz"
    write_nifti(small, image[::4, ::4, ::4].astype(np.float32), affine @ np.diag([4, 4, 4, 1]))
    page.page.set_input_files("#im-upload", str(small))
    page.wait("s.im_volumes.some(v => v.title.startsWith('small scan'))")


def test_upload_names_never_leave_the_temporary_folder():
    from itermask_web.files import Uploads

    uploads = Uploads(limit_mb=1)
    try:
        written = uploads.write([{"name": "../../escape.nii.gz", "size": 3, "content": b"abc"}])
        (scan,) = written
        assert scan.path.resolve().is_relative_to(uploads.folder.resolve()) and scan.path.name == "escape.nii.gz"
        for name in ("notes.txt", ".hidden.nii", ""):
            with pytest.raises(ItermaskError, match="upload a"):
                uploads.write([{"name": name, "content": b"x"}])
        with pytest.raises(ItermaskError, match="accepts at most 1.0 MB"):
            uploads.write([{"name": "big.nii", "content": b"x" * 1_000_001}])
    finally:
        uploads.close()
    assert not uploads.folder.exists()


def process_group(group: int) -> list[int]:
    """The live (not zombie) processes of a process group: the worker is started in a group of its own, which
    holds Slicer's launcher and python-real when the worker runs through PythonSlicer."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_the_worker_dies_with_the_server(browser):
    with served("--device", "cpu") as (url, process):
        page = Page(browser, url).opened()
        page.press("im-load-example", until="s.im_status.includes('Example loaded')")
        workers = [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        assert workers and process_group(workers[0]), "the worker process was not started"
        process.send_signal(signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while process_group(workers[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_group(workers[0]) == []
        page.page.close()
