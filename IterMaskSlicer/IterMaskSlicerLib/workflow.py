"""What each of the module's buttons does, as worker commands in order: the workflow both faces share.

A face (the Slicer widget, the web page) maps a button to one :class:`Workflow` call and, on a timer, calls
:meth:`Workflow.poll` and shows what it returns; it holds no chaining, cancelling or roll-back of its own. A button
starts an *action*: one command (Step) or several in a queue (Segment: initialize, then run to convergence; Continue
from edited segmentation: set the mask, then step). The next command starts only when the one before it is done; a
failure or a cancel drops whatever was queued, and the logic has already put session and scene back as they were.

>>> flow = Workflow(IterMaskLogic(scene))                                               # doctest: +SKIP
>>> flow.segment(volume, brain_mask)                                                    # doctest: +SKIP
>>> while (finished := flow.poll()) is None: time.sleep(0.03)                           # doctest: +SKIP
>>> finished.action, finished.event, flow.status                                        # doctest: +SKIP
('segment', 'done', 'Iteration 7 (shrink): mask 2.1% of the brain, 0.4 s. Converged.')
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from itermask.errors import ItermaskError

from .logic import POLL_SLICE, IterMaskLogic

IDLE = "Select a volume and press Segment."
READY = "Ready: press Step or Run to convergence."


@dataclass(frozen=True)
class Finished:
    """An action that has ended: its name (``"segment"``, ``"step"``, …) and how (``"done"`` or ``"cancelled"``)."""

    action: str
    event: str


class Workflow:
    """The actions of the module on one :class:`.logic.IterMaskLogic`, advanced by :meth:`poll`.

    Args:
        logic: the MRML logic (its worker client starts ``PythonSlicer`` inside Slicer).
    """

    def __init__(self, logic: IterMaskLogic):
        self.logic = logic
        self.action: str | None = None  # the action in progress
        self.queue: deque = deque()  # (command, arguments) still to send for it
        self._dropped = False  # a cancel dropped queued commands: the action ends cancelled
        self.status = IDLE
        self._result = None  # the segmentation node Apply created in this session

    # --- what a face shows ---------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """An action is in progress: nothing else may start (but :meth:`seek` may, and :meth:`cancel` where it can
        act)."""
        return self.action is not None

    @property
    def running(self) -> bool:
        """A run is in flight (Cancel stops it after its step; its progress is shown as it comes)."""
        request = self.logic.driver.request
        return request is not None and request.command == "run"

    @property
    def can_cancel(self) -> bool:
        """Cancel can act: a run is in flight or commands are still queued."""
        return bool(self.queue) or self.running

    @property
    def stepped(self) -> bool:
        """At least one iteration is shown: Back, the sliders and Apply can act."""
        return self.logic.ready and self.logic.state["position"] >= 0

    @property
    def result(self):
        """The segmentation node Apply made in this session, while it is still in the scene (else None)."""
        if self._result is not None and not self.logic.scene.IsNodePresent(self._result):
            self._result = None
        return self._result

    # --- actions -------------------------------------------------------------------------------------------------
    def load_example(self) -> None:
        """Put the built-in example FLAIR and its brain mask in the scene (needs nilearn, not torch)."""
        self._start("example", [("example", {})])

    def initialize(self, volume, brain_mask=None, model=None, policy=None, seed=0, device="auto") -> None:
        self._open("initialize", [], volume, brain_mask, model, policy, seed, device)

    def segment(self, volume, brain_mask=None, model=None, policy=None, seed=0, device="auto") -> None:
        """Initialize, then run to convergence: the one-click way."""
        self._open("segment", [("run", {"max_steps": None})], volume, brain_mask, model, policy, seed, device)

    def step(self) -> None:
        self._start("step", [("step", {})])

    def back(self) -> None:
        self._start("back", [("back", {})])

    def run(self, max_steps: int | None = None) -> None:
        self._start("run", [("run", {"max_steps": max_steps})])

    def set_tau(self, tau: float) -> None:
        """Shrink with ``tau`` from the next step. The session's own τ starts nothing (a slider put back, or set
        again by the display), so later iterations are not discarded for no change."""
        if self.logic.ready and abs(float(tau) - self.logic.state["tau"]) <= 1e-9:
            return
        self._start("set_tau", [("set_tau", {"tau": float(tau)})])

    def seek(self, index: int) -> None:
        """Show iteration ``index``. While a seek is in flight the newest target waits in its place, so dragging the
        iteration slider sends one seek at a time and ends on where the slider stopped."""
        if self.action == "seek":
            self.queue.clear()
            self.queue.append(("seek", {"index": int(index)}))
        elif self.logic.ready and int(index) != self.logic.state["position"]:
            self._start("seek", [("seek", {"index": int(index)})])

    def continue_from_result(self) -> None:
        """Use the applied (and perhaps edited) segmentation as the mask, then take one step from it."""
        if self.result is None:
            raise ItermaskError("apply a result first (and edit it in the Segment Editor if needed)")
        self._start("continue", [("set_mask", {"segmentation_node": self.result}), ("step", {})])

    def apply(self, segment_name: str = "Anomaly", source: str = "thresholded"):
        """A new segmentation node holding what the preview shows (or the current mask), for the Segment Editor."""
        self._check_idle()
        self._result = self.logic.apply(segment_name or "Anomaly", source=source)
        self.status = f"Created {self._result.GetName()}: edit it in the Segment Editor if needed."
        return self._result

    def preview_threshold(self, threshold: float) -> None:
        """Move the segmentation threshold: the worker thresholds and cleans the shown map (a short wait, no action;
        ignored while an action is in progress)."""
        if self.stepped and self.logic.preview is not None and not self.busy:
            self.logic.preview_threshold(threshold)

    def reset(self) -> None:
        self._check_idle()
        self._result = None
        self.logic.reset()
        self.status = IDLE

    def cancel(self) -> None:
        """Drop what is queued and stop a run after its step; :meth:`poll` then reports the action cancelled."""
        if self.can_cancel:
            self._dropped = bool(self.queue)
            self.queue.clear()
            self.logic.cancel()
            self.status = "Cancelling after the current step…"

    def close(self) -> None:
        """The scene is closing or the application exiting: stop the worker now, mid-run too, and forget all."""
        self.queue.clear()
        self.action = None
        self._result = None
        self.logic.close()
        self.status = IDLE

    # --- advancing -----------------------------------------------------------------------------------------------
    def poll(self, budget: float = POLL_SLICE) -> Finished | None:
        """Show what the worker sent (a slice of work, never a wait); start the next queued command when one is
        done. ``budget``: seconds of showing per call (the widget's timer keeps the default; a server without a UI
        thread may take more). Returns :class:`Finished` once the action has ended, else None. A failure drops the
        queue and is raised (session and scene are as before the failed command)."""
        if self.action is None:
            return None
        try:
            final = self.logic.poll(budget)
            if final is not None and final["event"] == "done" and self.queue:
                self._send(*self.queue.popleft())
                return None
        except Exception:
            self._end()
            self.status = "Failed: the scene is as before."
            raise
        if final is None:
            if self.running:
                self.status = self.describe_iteration(running=True)
            return None
        dropped, action = self._dropped, self._end()
        if final["event"] == "cancelled":
            self.status = "Cancelled: the scene is as before the run."
        elif dropped:  # what was in flight finished; what came after it never started
            self.status = f"Cancelled. {self.describe_iteration()}"
            return Finished(action, "cancelled")
        elif action == "example":
            self.status = "Example loaded: press Segment."
        else:
            self.status = self.describe_iteration()
        return Finished(action, final["event"])

    def describe_iteration(self, running: bool = False) -> str:
        state = self.logic.state
        if not state or not state["iteration"]:
            return READY if state else IDLE
        it = state["iteration"]
        end = " Running…" if running else (" Converged." if state["converged"] else "")
        return (f"Iteration {it['index']} ({it['phase']}): mask {100 * it['mask_fraction']:.1f}% of the brain, "
                f"{it['seconds']:.1f} s.{end}")

    # --- inside --------------------------------------------------------------------------------------------------
    def _check_idle(self) -> None:
        if self.busy:
            raise ItermaskError("wait until the current step has finished (or cancel it)")

    def _open(self, action: str, then: list, volume, brain_mask, model, policy, seed, device) -> None:
        """A new session (the applied result of the last one is forgotten), then the commands ``then``."""
        self._result = None
        self._start(action, [("initialize", dict(volume_node=volume, brain_mask_node=brain_mask, model=model,
                                                 policy=policy, seed=seed, device=device)), *then])

    def _start(self, action: str, commands: list) -> None:
        self._check_idle()
        first, *rest = commands
        self._send(*first)  # raises before anything is queued when it cannot start
        self.action, self.queue = action, deque(rest)
        self.status = "Working…"

    def _send(self, command: str, arguments: dict) -> None:
        if command == "initialize":
            self.logic.begin_initialize(**arguments)
        elif command == "set_mask":
            self.logic.begin_continue_from_segmentation(**arguments)
        else:
            self.logic.begin(command, **arguments)

    def _end(self) -> str | None:
        action, self.action, self._dropped = self.action, None, False
        self.queue.clear()
        return action
