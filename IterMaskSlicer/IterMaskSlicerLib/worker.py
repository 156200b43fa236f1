"""The IterMask worker process: it holds the model and the session, so torch never runs in Slicer's process.

Slicer's main thread holds Python's global lock whenever Qt is idle, so a Python thread inside Slicer only advances
while the main thread happens to run Python; a separate process runs at full speed and can be killed. The client
(:mod:`.client`) starts this file with Slicer's own Python (``PythonSlicer``) as ``python worker.py FOLDER``.

Protocol: one JSON command per line on stdin, ``{"id": n, "cmd": name, ...arguments}``; JSON lines on stdout:
``progress`` messages while a run advances, then exactly one final ``done``, ``cancelled`` or ``error`` with the
command's id. Each message that follows a change carries the session's ``state`` and, under ``arrays``, ``.npy``
files in FOLDER (the client deletes them once read): ``mask`` for every newly computed iteration, ``map`` (the
anomaly map) for the iteration the command ends on, ``brain`` once after ``initialize``; all on the input grid.
A reader thread queues stdin, so a run notices ``cancel`` after the step in flight; the main thread does the work.
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
import traceback
from pathlib import Path

import numpy as np

if __name__ == "__main__":  # run as a script by PythonSlicer: make ``itermask`` importable from the module folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itermask  # noqa: E402
from itermask.errors import ItermaskError  # noqa: E402


def tau_curves(session) -> dict[str, list[float]]:
    """The τ(t) plot's columns: ``t``, ``tau`` (the τ that made each mask: the shrink path for IterMask3D, else the
    iterations), ``fit`` (a·tan(b·t), NaN without a fit) and ``tau_stop`` (constant, NaN until known)."""
    described = session.policy.describe(session)
    if described.tau_path:
        tau = np.asarray(described.tau_path, float)
    else:
        tau = np.asarray([np.nan if it.tau is None else it.tau for it in session.history], float)
    t = np.arange(len(tau), dtype=float)
    fit = described.stop.fit(t) if described.stop else np.full_like(t, np.nan)
    tau_stop = described.tau_stop if described.tau_path else session.tau
    stop_column = np.full_like(t, np.nan if tau_stop is None else tau_stop)
    return {"t": t.tolist(), "tau": tau.tolist(), "fit": fit.tolist(), "tau_stop": stop_column.tolist()}


def describe(session) -> dict:
    """What the Slicer side shows of a session (plain JSON)."""
    current = session.current
    stop = session.policy.describe(session).tau_stop
    return {"position": session.position, "count": len(session.iterations), "tau": session.tau,
            "threshold": session.threshold, "tau_stop": stop,
            "converged": session.converged, "iteration": current.summary(session.brain_voxels).as_dict() if current else None,
            "plot": tau_curves(session)}


class Worker:
    """Executes commands on one session; ``send`` writes a message, ``pending`` holds commands read meanwhile."""

    def __init__(self, folder: Path, send, pending: queue.Queue):
        self.folder, self.send, self.pending = folder, send, pending
        self.session: itermask.Session | None = None
        self.models: dict[str, itermask.ModelBundle] = {}
        self._written = 0

    # --- arrays -------------------------------------------------------------------------------------------------
    def _write(self, kind: str, array: np.ndarray) -> str:
        """An array as a .npy file, written under a temporary name and renamed, so a reader never sees half of it."""
        self._written += 1
        path = self.folder / f"{self._written:06d}-{kind}.npy"
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as stream:
            np.save(stream, array)
        os.replace(partial, path)
        return str(path)

    def _load(self, path: str) -> np.ndarray:
        return np.load(path, allow_pickle=False)

    def _new_mask(self) -> dict:
        session = self.session
        return {"mask": self._write("mask", session.prepared.mask_to_input(session.current.mask))}

    def _current_map(self) -> dict:
        if self.session.current is None:
            return {}
        return {"map": self._write("map", self.session.anomaly_map())}

    def reply(self, request: dict, event: str, arrays: dict | None = None) -> None:
        self.send({"id": request["id"], "event": event, "state": describe(self.session) if self.session else None,
                   "arrays": arrays or {}})

    # --- commands -----------------------------------------------------------------------------------------------
    def execute(self, request: dict) -> None:
        handler = getattr(self, "cmd_" + request["cmd"], None)
        if handler is None:
            raise ItermaskError(f"unknown worker command {request['cmd']!r}")
        if handler not in (self.cmd_initialize, self.cmd_example) and self.session is None:
            raise ItermaskError("initialize a session first")
        handler(request)

    def cmd_example(self, request: dict) -> None:
        """The built-in example scan and its brain mask (the same as ``itermask demo``'s); needs no torch."""
        from itermask.example import make_example

        image, brain, _, affine = make_example(int(request.get("seed", 0)))
        self.send({"id": request["id"], "event": "done", "state": None, "affine": affine.tolist(),
                   "arrays": {"image": self._write("image", image), "brain": self._write("brain", brain)}})

    def cmd_initialize(self, request: dict) -> None:
        key = str(request["model"])
        if key not in self.models:
            self.models[key] = itermask.load_model(key)
        brain = self._load(request["brain"]) if request.get("brain") else None
        self.session = itermask.Session(self.models[key], self._load(request["image"]), np.asarray(request["affine"]),
                                        brain, policy=request["policy"], seed=request["seed"],
                                        device=request.get("device", "auto"), tau=request.get("tau"))
        model = self.session.model
        self.send({"id": request["id"], "event": "done", "state": describe(self.session),
                   "arrays": {"brain": self._write("brain", self.session.prepared.input_brain.astype(np.uint8))},
                   "model": {"name": model.name, "dims": model.dims, "calibration": {
                       k: model.calibration.get(k) for k in ("tau", "tau_percentile", "threshold",
                                                             "threshold_percentile")}}})

    def cmd_step(self, request: dict) -> None:
        computed = len(self.session.iterations)
        self.session.step()
        arrays = self._new_mask() if len(self.session.iterations) > computed else {}
        self.reply(request, "done", dict(arrays, **self._current_map()))

    def cmd_back(self, request: dict) -> None:
        self.session.back()
        self.reply(request, "done", self._current_map())

    def cmd_seek(self, request: dict) -> None:
        self.session.seek(int(request["index"]))
        self.reply(request, "done", self._current_map())

    def cmd_set_tau(self, request: dict) -> None:
        self.session.set_tau(float(request["tau"]))
        self.reply(request, "done")

    def cmd_set_mask(self, request: dict) -> None:
        self.session.set_mask(self._load(request["mask"]))
        self.reply(request, "done")

    def cmd_reset(self, request: dict) -> None:
        self.session.reset()
        self.reply(request, "done")

    def cmd_run(self, request: dict) -> None:
        """Step until converged (or ``max_steps``); a ``progress`` message per step. A ``cancel`` or a failure (e.g.
        out of memory) puts the session back where the run started."""
        session, max_steps = self.session, request.get("max_steps")
        checkpoint = session.position, len(session.iterations), session._pending_mask  # an edit a step consumes
        steps = 0
        try:
            while not session.converged and (max_steps is None or steps < max_steps):
                if self._cancel_requested():
                    self._restore(*checkpoint)
                    self.reply(request, "cancelled", self._current_map())
                    return
                computed = len(session.iterations)
                session.step()
                steps += 1
                self.reply(request, "progress", self._new_mask() if len(session.iterations) > computed else {})
        except Exception:
            self._restore(*checkpoint)
            raise
        self.reply(request, "done", self._current_map())

    def _restore(self, position: int, count: int, pending_mask) -> None:
        del self.session.iterations[count:]
        self.session.position, self.session._pending_mask = position, pending_mask

    def _cancel_requested(self) -> bool:
        """Whether a ``cancel`` arrived; other commands cannot (the client sends nothing else during a run)."""
        try:
            while True:
                if self.pending.get_nowait().get("cmd") == "cancel":
                    return True
        except queue.Empty:
            return False


def main(folder: str) -> int:
    # Whatever a library prints must not corrupt the protocol: stdout (fd 1) becomes stderr, replies use a copy.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    commands: queue.Queue = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip():
                commands.put(json.loads(line))
        commands.put(None)  # the client went away: leave

    threading.Thread(target=read_stdin, daemon=True).start()
    worker = Worker(Path(folder), send, commands)
    while (request := commands.get()) is not None:
        if request["cmd"] == "cancel":  # nothing is running: a late cancel has nothing to undo
            continue
        if request["cmd"] == "quit":
            break
        try:
            worker.execute(request)
        except Exception as exc:  # reported to the user; the session stays as it was before the command
            message = str(exc) if isinstance(exc, (ItermaskError, IndexError)) else f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            send({"id": request["id"], "event": "error", "message": message, "state": None, "arrays": {}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
