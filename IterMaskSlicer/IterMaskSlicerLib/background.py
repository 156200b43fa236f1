"""Steps computed off the UI thread, so Slicer never freezes; results are shown on the UI thread.

MRML may only be touched from the main thread, so the worker runs nothing but ``session.step()`` (pure torch), one
step per task, and the UI polls (a Qt timer in the widget; a loop in tests). Between tasks the session is idle, so
the main thread can read it safely. Nothing here imports Qt.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from .logic import IterMaskLogic

RUNNING, DONE, CANCELLED, FAILED = "running", "done", "cancelled", "failed"


class BackgroundRun:
    """Run up to ``max_steps`` steps (None: to convergence) of ``logic``'s session in a worker thread.

    Call :meth:`poll` regularly from the UI thread: it shows finished steps and starts the next one. :meth:`cancel`
    stops after the step in flight and puts session and scene back as they were before the run; a failure does
    the same and keeps the exception in :attr:`error`.
    """

    def __init__(self, logic: IterMaskLogic, max_steps: int | None = None, executor: ThreadPoolExecutor | None = None):
        self.logic, self.max_steps = logic, max_steps
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="itermask")
        self.state, self.error, self.steps_done = RUNNING, None, 0
        self._checkpoint = logic.checkpoint()
        self._cancel_requested = False
        self._future: Future | None = None
        self._submit_next()

    def _wanted(self) -> bool:
        session = self.logic.session
        return not session.converged and (self.max_steps is None or self.steps_done < self.max_steps)

    def _submit_next(self) -> None:
        if self._wanted():
            self._future = self.executor.submit(self.logic.session.step)
        else:
            self._future, self.state = None, DONE

    def cancel(self) -> None:
        """Stop after the step that is being computed and undo the run."""
        self._cancel_requested = True

    def poll(self) -> str:
        """Show a finished step and start the next; returns the state (running, done, cancelled or failed)."""
        if self.state != RUNNING or self._future is None or not self._future.done():
            return self.state
        try:
            self._future.result()
        except Exception as exc:  # the model failed (e.g. out of memory): undo and report
            self.error, self.state = exc, FAILED
            self.logic.restore(self._checkpoint)
            return self.state
        if self._cancel_requested:
            self.state = CANCELLED
            self.logic.restore(self._checkpoint)
            return self.state
        self.steps_done += 1
        self.logic.show()
        self._submit_next()
        return self.state
