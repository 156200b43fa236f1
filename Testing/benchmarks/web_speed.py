"""The web page's speed in a real browser (headless Chromium): first page load, seconds per Step through the page
against the core's own step on the same example, and threshold slider to updated view.

    python Testing/benchmarks/web_speed.py                          # flair-2d, IterMask², 8 steps
    python Testing/benchmarks/web_speed.py --model flair-3d --steps 5 --device cuda

Per Step, the page's figure is the wall time from the click to the panel showing the new iteration (worker, reply,
masks into the scene, the view re-rendered, the state pushed). The CLI's figure is the same session stepped in this
process (what ``itermask segment`` runs, without reading and writing files). The slider figure is from the key press
on the threshold slider to the axial view's image changing in the page. Prints figures, asserts nothing.
Targets (issue 22): Step through the page ≤ 1.2 × the CLI's; threshold to view ≤ 200 ms.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from web_browser import Page, chromium, served  # noqa: E402

NEW_VIEW = ("(before) => { const img = document.querySelector('img.image-display-area'); "
            "return img && img.src !== before; }")


def core_step_seconds(model: str, policy: str, steps: int, device: str) -> list[float]:
    """Seconds of each of ``steps`` steps of a core session on the example (the first one included)."""
    from itermask import Session, load_model
    from itermask.example import make_example

    image, brain, _, affine = make_example(0)
    session = Session(load_model(model), image, affine, brain, policy=policy, seed=0, device=device)
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        session.step()
        seconds.append(time.perf_counter() - start)
    return seconds


def page_figures(url: str, model: str, policy_label: str, steps: int, moves: int) -> dict:
    with chromium() as browser:
        start = time.perf_counter()
        page = Page(browser, url).opened()
        page.page.wait_for_selector("img.image-display-area", state="attached")
        first_load = time.perf_counter() - start
        page.press("im-load-example", until="s.im_status.includes('Example loaded')")
        if page.state("im_model") != model:
            page.choose("im-model", model)
        page.choose("im-policy", policy_label)
        page.press("im-initialize", until="s.im_ready")
        seconds = []
        for n in range(steps):
            start = time.perf_counter()
            page.press("im-step", until=f"s.im_iterations === {n + 1}")
            seconds.append(time.perf_counter() - start)
        thumb = page.page.locator(".v-slider:has(#im_threshold-slider) [role=slider]")
        thumb.focus()
        slider = []
        for _ in range(moves):
            before = page.page.evaluate("document.querySelector('img.image-display-area').src")
            start = time.perf_counter()
            thumb.press("ArrowRight")
            page.page.wait_for_function(NEW_VIEW, arg=before)
            slider.append(time.perf_counter() - start)
            time.sleep(0.2)
    return {"first_load": first_load, "steps": seconds, "slider": slider}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flair-2d", help="bundle name or path (default flair-2d)")
    parser.add_argument("--policy", default="itermask2", choices=("itermask2", "itermask3d"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--moves", type=int, default=10, help="threshold slider moves to time")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    args = parser.parse_args()
    from itermask import available_models

    label = {"itermask2": "IterMask² (calibrated τ)", "itermask3d": "IterMask3D (subject-specific τ)"}[args.policy]
    bundled = args.model in available_models()
    with served(*([] if bundled else ["--model", args.model]), "--device", args.device) as (url, _):
        page = page_figures(url, args.model if bundled else Path(args.model).name, label, args.steps, args.moves)
    core = core_step_seconds(args.model, args.policy, args.steps, args.device)
    # The first step of either includes one-off work (model load on the page's side is in Initialize).
    page_step, core_step = statistics.median(page["steps"][1:]), statistics.median(core[1:])
    print(f"model {args.model}, policy {args.policy}, device {args.device}, {args.steps} steps")
    print(f"first page load (to the panel and the view): {page['first_load']:.2f} s")
    print(f"Step, median of steps 2..{args.steps}: page {page_step:.3f} s, core {core_step:.3f} s, "
          f"ratio {page_step / core_step:.2f} (target ≤ 1.2)")
    print(f"threshold slider to updated view, median of {args.moves}: {1000 * statistics.median(page['slider']):.0f} "
          f"ms (max {1000 * max(page['slider']):.0f} ms; target ≤ 200 ms)")


if __name__ == "__main__":
    main()
