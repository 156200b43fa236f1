"""The session in the worker process, as the Slicer side knows it: one command in flight, its replies, its end.

No scene here: :class:`SessionDriver` sends commands through a :class:`.client.WorkerClient`, hands back each reply
with its arrays read, keeps the session's last reported ``state``, and ends every command the same way. A command
that does not finish (cancelled, failed, or its worker died) rolls ``state`` back to what it was before the command
and tells ``on_roll_back``, so whoever showed the replies can show the earlier state again.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from itermask.errors import ItermaskError

from .client import WorkerClient, WorkerDied

# Commands that need no session in the worker.
SESSIONLESS = ("initialize", "example")


@dataclass
class Request:
    """The command in flight: its id, name, the state before it, and what the caller wants back with its reply."""

    id: int
    command: str
    state_before: dict | None
    context: dict = field(default_factory=dict)


class SessionDriver:
    """Sends one command at a time to the worker and collects its replies without waiting.

    Args:
        worker: the worker client (its injected process runner starts ``PythonSlicer`` inside Slicer).
        on_roll_back: called with the state before a command that did not finish (None: there was no session).
    """

    def __init__(self, worker: WorkerClient, on_roll_back=lambda state: None):
        self.worker, self.on_roll_back = worker, on_roll_back
        self.state: dict | None = None  # the session as the worker last reported it; None: no session
        self.request: Request | None = None

    @property
    def busy(self) -> bool:
        return self.request is not None

    @property
    def ready(self) -> bool:
        return self.state is not None

    def send(self, command: str, context: dict | None = None, **arguments) -> Request:
        if self.busy:
            raise ItermaskError("wait until the current step has finished (or cancel it)")
        if command not in SESSIONLESS and not self.ready:
            raise ItermaskError("initialize a session first")
        self.request = Request(self.worker.send(command, **arguments), command, self.state, context or {})
        return self.request

    def cancel(self) -> None:
        """Stop a run after the step in flight; its end, like a failure's, rolls everything back."""
        if self.busy and self.request.command == "run":
            self.worker.send("cancel", run=self.request.id)

    def receive(self) -> tuple[list[dict], dict | None]:
        """(replies to show, the final reply or None), without waiting; arrays named in a reply are read into it.

        A cancelled command returns ``([], final)``; a failed one raises :class:`ItermaskError`, a dead worker
        :class:`.client.WorkerDied` (the session is then gone: the next command starts a new worker)."""
        request = self.request
        if request is None:
            return [], None
        try:
            replies = [m for m in self.worker.messages() if m.get("id") == request.id]
        except WorkerDied:
            self._roll_back(request, state=None)
            raise
        final = replies[-1] if replies and replies[-1]["event"] != "progress" else None
        if final is not None and final["event"] != "done":
            self._roll_back(request, state=request.state_before)
            if final["event"] == "error":
                raise ItermaskError(final["message"])
            return [], final
        for reply in replies:
            reply["arrays"] = {k: self.worker.take_array(path) for k, path in reply.get("arrays", {}).items()}
            if reply["state"] is not None:  # the example scan has none: an open session stays
                self.state = reply["state"]
        if final is not None:
            self.request = None
        return replies, final

    def _roll_back(self, request: Request, state: dict | None) -> None:
        self.request, self.state = None, state
        self.on_roll_back(request.state_before)

    def stop(self) -> None:
        """Forget the session and stop the worker (the module or the scene is closing)."""
        self.request, self.state = None, None
        self.worker.stop()
