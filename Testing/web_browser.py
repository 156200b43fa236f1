"""The IterMask page in a real browser for the tests, the screenshots and the speed benchmark: ``itermask web`` in a
process of its own on a free port, driven by Playwright in Debian's headless Chromium (``/usr/bin/chromium``, no
browser download)."""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

CHROMIUM = os.environ.get("ITERMASK_CHROMIUM", "/usr/bin/chromium")
VIEWPORT = {"width": 1400, "height": 900}
STATE = "new Proxy({}, { get: (_, key) => window.trame.state.get(key) })"  # the page's state as ``s.key`` in JS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(*arguments: str, timeout: float = 120.0):
    """``itermask web ARGUMENTS`` on a free port; yields ``(url, process)`` once it says where it serves."""
    port = free_port()
    itermask = shutil.which("itermask", path=str(Path(sys.executable).parent)) or "itermask"
    process = subprocess.Popen([itermask, "web", "--port", str(port), *arguments], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        start, line = time.monotonic(), ""
        while "served at" not in line:
            line = process.stdout.readline()
            if not line and process.poll() is not None or time.monotonic() - start > timeout:
                raise RuntimeError(f"itermask web did not start (exit code {process.poll()})")
        yield line.split("served at ")[1].split()[0].replace("localhost", "127.0.0.1"), process
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def chromium():
    """A headless Chromium browser (Playwright's sync API)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Page:
    """One tab on the IterMask page, with the few moves a person makes; ``state(key)`` reads the page's state."""

    def __init__(self, browser, url: str, timeout_s: float = 180.0):
        self.page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
        self.page.set_default_timeout(timeout_s * 1000)
        self.page.goto(url)

    def opened(self) -> "Page":
        self.page.wait_for_selector("#im-segment")
        return self

    def state(self, key: str):
        return self.page.evaluate(f"window.trame.state.get('{key}')")

    def wait(self, condition: str) -> None:
        """Until the JS ``condition`` on the page's state (``s``) holds, e.g. ``s.im_iterations > 2``."""
        self.page.wait_for_function(f"(() => {{ const s = {STATE}; return {condition}; }})()")

    def settled(self, key: str, quiet_s: float = 1.0):
        """The value of ``key`` once it has not changed for ``quiet_s`` seconds (e.g. after a slider was moved)."""
        value, since = self.state(key), time.monotonic()
        while time.monotonic() - since < quiet_s:
            time.sleep(0.1)
            if (now := self.state(key)) != value:
                value, since = now, time.monotonic()
        return value

    def press(self, element_id: str, until: str | None = None) -> None:
        """Click a control; then wait until ``until`` holds and nothing runs any more."""
        self.page.click(f"#{element_id}")
        if until is not None:
            self.wait(f"({until}) && !s.im_busy")

    def choose(self, select_id: str, option: str) -> None:
        """Pick ``option`` in a drop-down list."""
        self.page.locator(f".v-select:has(#{select_id}) .v-field").click()
        self.page.get_by_role("option", name=option).click()

    def layout(self, name: str) -> None:
        """Switch the view layout and wait until each of its views shows an image."""
        views = {"Axial": 1, "Axial primary": 3, "Three views": 3}[name]
        self.page.get_by_role("button", name=name, exact=True).click()
        self.page.wait_for_function("(n) => [...document.querySelectorAll('img.image-display-area')]"
                                    ".filter(img => img.offsetWidth > 0 && img.src).length === n", arg=views)

    def slide(self, slider: str, steps: int) -> None:
        """Move a slider by ``steps`` of its step with the keyboard (negative: down), as a person does."""
        thumb = self.page.locator(f".v-slider:has(#{slider}) [role=slider]")
        thumb.focus()
        for _ in range(abs(steps)):
            thumb.press("ArrowRight" if steps > 0 else "ArrowLeft")

    def download(self, element_id: str, folder: Path) -> Path:
        with self.page.expect_download() as download:
            self.page.click(f"#{element_id}")
        path = Path(folder) / download.value.suggested_filename
        download.value.save_as(path)
        return path

    def view_box(self, index: int = 0) -> dict:
        """A slice view's box on the page (x, y, width, height in CSS pixels); 0: the axial view."""
        return self.page.locator("img.image-display-area").nth(index).bounding_box()

    def view_image(self, index: int = 0) -> np.ndarray:
        """(rows, columns, 3) uint8: what a slice view shows now (0: the axial view)."""
        from PIL import Image

        png = self.page.screenshot(clip=self.view_box(index))
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def stroke(self, points: list[tuple[float, float]]) -> None:
        """A mouse stroke through ``points`` given as fractions of the slice view's width and height."""
        box = self.view_box()
        at = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
        mouse = self.page.mouse
        mouse.move(*at[0])
        mouse.down()
        for x, y in at[1:]:
            mouse.move(x, y, steps=8)
        mouse.up()

    def screenshot(self, path: Path | None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(path))
