"""The README's pictures of the web page (``docs/web/*.png``): the real page in headless Chromium, with the shipped
default FLAIR model (the one ``itermask web`` preselects, from ``defaults.json``) on the built-in example.

    python docs/web/make_screenshots.py                  # writes docs/web/2-segmented.png … 5-continued.png
    python docs/web/make_screenshots.py --device cuda -o /tmp/shots

Stages: segmented; threshold moved; the applied result (magenta) extended by a paint stroke along its front edge;
one step continued from the edit, in three views. Every view is placed through the example's lesion, as a person
scrolls to it (the views otherwise open on the volume's centre, and the sagittal one on the midline, 28 mm from it).
Needs the ``web`` and ``test`` extras and Chromium (``/usr/bin/chromium``); a few minutes on a CPU.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "Testing"))

from web_browser import Page, chromium, served  # noqa: E402

# The example's lesion centre (itermask.example: R 28, A -12, S 22 mm) on each view's slice slider; the sagittal
# slider's value runs from the patient's right to left (-R), as the view is seen from the left.
LESION_ON_SLIDERS = {"Red": 22.0, "Green": -12.0, "Yellow": -28.0}
SETTLE_S = 3.0  # the views' new frames have arrived (a render takes up to a few hundred ms on a busy CPU)


def through_lesion(page: Page) -> None:
    """Each slice view's slider on the lesion."""
    for view, offset in LESION_ON_SLIDERS.items():
        page.page.evaluate(f"window.trame.state.set('{view}__SliderState__value', {offset})")


def shot(page: Page, path: Path) -> None:
    time.sleep(SETTLE_S)
    page.screenshot(path)


def result_pixels(page: Page) -> np.ndarray:
    """(rows, columns) bool: where the axial view shows the applied result's magenta (``RESULT_COLOR``)."""
    rgb = page.view_image().astype(int)
    return (rgb[..., 0] - rgb[..., 1] > 60) & (rgb[..., 2] - rgb[..., 1] > 60)


def edge_stroke(page: Page) -> list[tuple[float, float]]:
    """A stroke along the front (top) edge of the applied result in the axial view, as fractions of the view: half
    the brush lies outside the result, so the stroke extends it."""
    rows, columns = np.nonzero(result_pixels(page))
    if rows.size == 0:
        raise RuntimeError("the applied result is not visible in the axial view")
    height, width = page.view_box()["height"], page.view_box()["width"]
    points = []
    for column in np.linspace(np.percentile(columns, 20), np.percentile(columns, 80), 5):
        top = rows[np.abs(columns - column) <= 1].min()
        points.append((float(column) / width, float(top) / height))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=HERE)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    args = parser.parse_args()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    with served("--device", args.device) as (url, _), chromium() as browser:
        page = Page(browser, url, timeout_s=1800).opened()
        page.press("im-load-example", until="s.im_status.includes('Example loaded')")
        model, policy = page.state("im_model"), page.state("im_policy")
        print(f"model {model} (the shipped FLAIR default), policy {policy}", flush=True)
        through_lesion(page)
        page.press("im-segment", until="s.im_stepped && s.im_status.includes('Converged')")
        print(page.state("im_status"), flush=True)
        shot(page, out / "2-segmented.png")
        page.slide("im_threshold-slider", 25)
        page.settled("im_threshold_raw")
        shot(page, out / "3-threshold.png")
        page.press("im-apply", until="s.im_has_result")
        time.sleep(SETTLE_S)  # the result in the view, where the stroke is placed
        page.press("im-effect-paint", until="s.im_active_effect === 'paint'")
        edits = page.state("im_edits")
        page.stroke(edge_stroke(page))
        page.wait(f"s.im_edits > {edits}")
        page.press("im-effect-none", until="s.im_active_effect === 'none'")
        shot(page, out / "4-painted.png")
        steps = page.state("im_iterations")
        page.press("im-continue", until=f"s.im_iterations === {steps + 1}")
        page.layout("Three views")
        through_lesion(page)
        shot(page, out / "5-continued.png")
        print(page.state("im_status"), flush=True)
    print(f"wrote {', '.join(sorted(p.name for p in out.glob('[2-5]-*.png')))} in {out}")


if __name__ == "__main__":
    main()
