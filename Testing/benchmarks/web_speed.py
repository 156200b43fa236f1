"""The web page's speed in a real browser (headless Chromium): first page load, seconds per Step and per step of a
Run through the page against the core's on the same example, and threshold slider to updated view.

    python Testing/benchmarks/web_speed.py                          # flair-2d, IterMask², 8 steps
    python Testing/benchmarks/web_speed.py --model flair-3d --steps 5 --device cuda

Per Step, the page's figures are the wall times from the click to the panel showing the new iteration (worker,
reply, masks into the scene, the state pushed) and to the axial view's new image having arrived too (rendered,
encoded, sent). The CLI's figure is the same session stepped in this process (what ``itermask segment`` runs, without
reading and writing files), measured before and after the page (the machine's load changes). The slider figure is
from the key press on the threshold slider to the axial view's image changing in the page. Prints figures, asserts
nothing; on a shared machine run it twice and read the load average it prints.
Run to convergence is timed from the click to the last iteration in the view, against the core's run with its result;
a second time with the browser asked for reduced motion, since the page's animated busy bar costs the headless browser
(software-rendered, on the same CPUs as server and worker) a share of a small machine.
Targets (issue 22): Step through the page ≤ 1.2 × the CLI's; threshold to view ≤ 200 ms.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from web_browser import Page, chromium, served  # noqa: E402

NEW_VIEW = ("(before) => { const img = document.querySelector('img.image-display-area'); "
            "return img && img.src !== before; }")
VIEW = "document.querySelector('img.image-display-area').src"


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux); less swayed by other load than wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    children = [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    return children + [d for c in children for d in descendants(c)]


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


def core_run_seconds(model: str, policy: str, device: str) -> tuple[float, int]:
    """Seconds of a core session's run to convergence on the example (what ``itermask segment`` runs between reading
    and writing files, its result included), and its number of steps."""
    from itermask import Session, load_model
    from itermask.example import make_example

    image, brain, _, affine = make_example(0)
    session = Session(load_model(model), image, affine, brain, policy=policy, seed=0, device=device)
    start = time.perf_counter()
    session.run()
    return time.perf_counter() - start, len(session.iterations)


def page_figures(url: str, server: int, model: str, policy_label: str, steps: int, moves: int) -> dict:
    """Wall seconds as a person sees them, and the CPU seconds the server (``server``: its pid) and the worker took
    over the steps."""
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
        panel, view = [], []
        worker = descendants(server)
        cpu = [cpu_seconds(server), sum(map(cpu_seconds, worker))]
        for n in range(steps):
            before = page.page.evaluate(VIEW)
            start = time.perf_counter()
            page.press("im-step", until=f"s.im_iterations === {n + 1}")
            panel.append(time.perf_counter() - start)
            page.page.wait_for_function(NEW_VIEW, arg=before)
            view.append(time.perf_counter() - start)
        cpu = [cpu_seconds(server) - cpu[0], sum(map(cpu_seconds, worker)) - cpu[1]]
        thumb = page.page.locator(".v-slider:has(#im_threshold-slider) [role=slider]")
        thumb.focus()
        slider = []
        for _ in range(moves):
            before = page.page.evaluate(VIEW)
            start = time.perf_counter()
            thumb.press("ArrowRight")
            page.page.wait_for_function(NEW_VIEW, arg=before)
            slider.append(time.perf_counter() - start)
            time.sleep(0.2)
        run = {"": run_to_convergence(page)}
        page.page.emulate_media(reduced_motion="reduce")  # the busy bar stands still: see ui.py
        run[", reduced motion"] = run_to_convergence(page)
    return {"first_load": first_load, "panel": panel, "view": view, "slider": slider, "cpu": cpu, "run": run}


def run_to_convergence(page: Page) -> tuple[float, int]:
    """Wall seconds from pressing Run on a new session to the last iteration in the view, and its steps."""
    page.press("im-initialize", until="s.im_ready && s.im_iterations === 0")
    before = page.page.evaluate(VIEW)
    start = time.perf_counter()
    page.press("im-run", until="!s.im_busy && s.im_iterations > 0")
    page.page.wait_for_function(NEW_VIEW, arg=before)
    return time.perf_counter() - start, page.state("im_iterations")


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
    load = os.getloadavg()[0]
    core = core_step_seconds(args.model, args.policy, args.steps, args.device)[1:]
    with served(*([] if bundled else ["--model", args.model]), "--device", args.device) as (url, process):
        page = page_figures(url, process.pid, args.model if bundled else Path(args.model).name, label, args.steps, args.moves)
    core += core_step_seconds(args.model, args.policy, args.steps, args.device)[1:]
    core_run, core_run_steps = core_run_seconds(args.model, args.policy, args.device)
    # The first step of either includes one-off work (model load on the page's side is in Initialize).
    panel, view = (statistics.median(page[k][1:]) for k in ("panel", "view"))
    core_step = statistics.median(core)
    print(f"model {args.model}, policy {args.policy}, device {args.device}, {args.steps} steps; load average "
          f"{load:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs")
    print(f"first page load (to the panel and the view): {page['first_load']:.2f} s")
    print(f"Step, median of steps 2..{args.steps}: page {panel:.3f} s to the panel, {view:.3f} s to the view; core "
          f"{core_step:.3f} s; ratio {panel / core_step:.2f} / {view / core_step:.2f} (target ≤ 1.2)")
    print(f"CPU per Step (mean over all {args.steps}): server {page['cpu'][0] / args.steps:.3f} s, worker "
          f"{page['cpu'][1] / args.steps:.3f} s")
    for motion, (page_run, page_run_steps) in page["run"].items():
        print(f"Run to convergence{motion}, from the click to the view: page {page_run:.2f} s for {page_run_steps} "
              f"steps, {page_run / page_run_steps:.3f} s a step; core {core_run:.2f} s for {core_run_steps}, "
              f"{core_run / core_run_steps:.3f} s a step; ratio {page_run / core_run:.2f} (target ≤ 1.2)")
    print(f"threshold slider to updated view, median of {args.moves}: {1000 * statistics.median(page['slider']):.0f} "
          f"ms (max {1000 * max(page['slider']):.0f} ms; target ≤ 200 ms)")


if __name__ == "__main__":
    main()
