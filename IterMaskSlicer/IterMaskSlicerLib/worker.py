"""The IterMask worker process: it holds the model and the session, so torch never runs in Slicer's process.

Slicer's main thread holds Python's global lock whenever Qt is idle, so a Python thread inside Slicer only advances
while the main thread happens to run Python; a separate process runs at full speed and can be killed. The client
(:mod:`.client`) starts this file with Slicer's own Python (``PythonSlicer``) as ``python worker.py FOLDER``.

Protocol: one JSON command per line on stdin, ``{"id": n, "cmd": name, ...arguments}``; JSON lines on stdout, each
with the command's id: ``progress`` messages while a run advances, then exactly one final ``done``, ``cancelled`` or
``error``. ``progress`` and ``done`` carry the session's ``state`` (numbers: what the plot and the labels show).
Only a ``done`` carries arrays, as ``.npy`` files in FOLDER named under ``arrays`` (the client deletes them once
read): ``brain`` after ``initialize`` (uint8, the whole input grid); after a command that changes what is shown,
``masks`` (packed bits, one row per iteration computed by the command, the first being ``first_mask``) and ``map``
(float32, the shown iteration's anomaly map) with ``map_high`` (its 99.9 % quantile, the top of the display window)
and ``segmentation`` (packed bits: that map at the session's threshold, cleaned up by the bundle's rule, as
``Session.result`` segments it); ``{"cmd": "threshold", "threshold": t}`` sets a person's threshold and answers with
the shown map's ``segmentation`` at it.
Masks and map hold only the brain's voxels, in Slicer's (k, j, i) C order: the rest of the input grid is zero.
A run's progress carries no arrays, so it costs the run nothing; its masks travel once, when it is done.

A line that is not such a command (not JSON, not an object, no ``cmd``, no integer ``id``) is answered at once with
``{"id": <its id, or null when none can be read>, "event": "error", "message": ..., "state": null}``, and the worker
reads on; so is a command that fails.

``{"cmd": "cancel", "run": id}`` is the only message that is not queued: the reader thread notes it, the run stops
after the step in flight and goes back to the session as it was before the run. A ``cancelled`` or ``error`` reply
carries no arrays: the Slicer side shows again what it showed before the command.

``{"cmd": "quit"}`` or the end of stdin means the client has gone: queued commands are dropped, a run in flight is
cancelled, and the process ends within :data:`EXIT_GRACE_S` even if the command in flight does not.
"""
from __future__ import annotations

import copy
import json
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if __name__ == "__main__":  # run as a script by PythonSlicer: make ``itermask`` importable from the module folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Only what the example scan needs is imported here: torch comes with the first ``initialize`` (through ``itermask``'s
# lazy attributes and ``sampling``), so Load example works in a Slicer without PyTorch.
import itermask  # noqa: E402
from itermask._shared import atomic_file, voxel_spacing  # noqa: E402
from itermask.errors import ItermaskError  # noqa: E402
from IterMaskSlicerLib.readable import threshold_reference  # noqa: E402

if TYPE_CHECKING:
    from itermask.policies import PolicyReport
    from itermask.postprocess import CleanedMap, SegmentableRegion
    from IterMaskSlicerLib.sampling import BrainVoxels, MaskSampler


def tau_curves(session, described: PolicyReport) -> dict[str, list[float]]:
    """The τ(t) plot's columns: ``t``, ``tau`` (the τ that made each mask: the shrink path for IterMask3D, else the
    iterations), ``fit`` (a·tan(b·t), NaN without a fit) and ``tau_stop`` (constant, NaN until known); ``described``:
    the session's policy report."""
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
    current, described = session.current, session.policy.describe(session)
    return {"position": session.position, "count": len(session.iterations), "tau": session.tau,
            "threshold": session.threshold, "tau_stop": described.tau_stop,
            "converged": session.converged, "iteration": current.summary(session.brain_voxels).as_dict() if current else None,
            "plot": tau_curves(session, described)}


def checkpoint(session: itermask.Session) -> itermask.Session:
    """The session as it is now, for a cancelled or failed run to go back to. A step appends to ``iterations`` and
    rebinds plain attributes (position, τ, a pending edit), never changing an object in place, so a shallow copy with
    its own list of iterations is the session before the run."""
    saved = copy.copy(session)
    saved.iterations = list(session.iterations)
    return saved


class Worker:
    """Executes commands on one session; ``send`` writes a message, ``cancelled`` holds the ids of runs to stop."""

    def __init__(self, folder: Path, send, cancelled: set[int]):
        self.folder, self.send, self.cancelled = folder, send, cancelled
        self.session: itermask.Session | None = None
        self.voxels: BrainVoxels | None = None
        self.masks: MaskSampler | None = None
        self.support: np.ndarray | None = None  # the brain's voxels where the shown map can be nonzero (None: all)
        self.cleaned: CleanedMap | None = None  # the shown map, ready to be thresholded under the bundle's clean-up
        self.region: SegmentableRegion | None = None  # where that clean-up lets a segmentation lie (the brain's)
        self.models: dict[str, itermask.ModelBundle] = {}
        self._written = 0

    # --- arrays -------------------------------------------------------------------------------------------------
    def _write(self, kind: str, array: np.ndarray) -> str:
        """An array as a .npy file, written under a temporary name and renamed, so a reader never sees half of it."""
        self._written += 1
        path = self.folder / f"{self._written:06d}-{kind}.npy"
        with atomic_file(path) as stream:
            np.save(stream, array)
        return str(path)

    def _load(self, path: str) -> np.ndarray:
        return np.load(path, allow_pickle=False)

    def reply(self, request: dict, event: str, **extra) -> None:
        self.send(dict(extra, id=request["id"], event=event, state=describe(self.session) if self.session else None))

    def show(self, request: dict, computed: int) -> None:
        """``done`` with what the Slicer side shows: the masks of iterations ``computed`` onwards, the current map
        and the segmentation at the session's threshold (see :meth:`segmentation`)."""
        session = self.session
        if session.current is None:
            self.cleaned = None
            self.reply(request, "done")
            return
        masks = [self.masks.sample(it.mask) for it in session.iterations[computed:]]
        supported = self.voxels.values(session.model_grid_anomaly_map(), self.support)
        shown = supported  # session.anomaly_map's values at the brain's voxels: zero outside the support
        if self.support is not None:
            shown = np.zeros(self.voxels.count, np.float32)
            shown[self.support] = supported
        self.cleaned = session.rule.post.prepare(self.voxels.input_volume(supported, self.support), self.region,
                                                 voxel_spacing(session.prepared.input_affine))
        arrays = {"map": self._write("map", shown), "segmentation": self.segmentation()}
        if masks:
            arrays["masks"] = self._write("masks", np.packbits(masks, axis=1))
        high = float(np.quantile(shown, 0.999)) if shown.size else None
        self.reply(request, "done", arrays=arrays, first_mask=computed, map_high=high)

    def segmentation(self) -> str:
        """The shown map's segmentation at the session's threshold, cleaned up by the bundle's rule exactly as
        ``Session.result`` does (the map's threshold-free clean-up, the median and the rim, is done once per map in
        :meth:`show`), as packed bits at the brain's voxels: the written file's path."""
        segmented = np.zeros(self.voxels.count, bool)
        segmented[self.voxels.ordinals(self.cleaned.voxels(self.session.threshold))] = True
        return self._write("segmentation", np.packbits(segmented))

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
        from IterMaskSlicerLib.sampling import BrainVoxels, MaskSampler

        key = str(request["model"])
        if key not in self.models:
            self.models[key] = itermask.load_model(key)
        brain = self._load(request["brain"]) if request.get("brain") else None
        self.session = itermask.Session(self.models[key], self._load(request["image"]), np.asarray(request["affine"]),
                                        brain, policy=request["policy"], seed=request["seed"],
                                        device=request.get("device", "auto"), tau=request.get("tau"))
        prepared = self.session.prepared
        self.voxels, self.cleaned = BrainVoxels(prepared), None
        self.masks = MaskSampler(self.voxels)
        support = self.session.input_support().T[self.voxels.brain_kji]
        self.support = None if support.all() else support
        self.region = self.session.rule.post.region(prepared.input_brain, voxel_spacing(prepared.input_affine))
        model = self.session.model
        self.reply(request, "done", arrays={"brain": self._write("brain", self.voxels.brain_kji.astype(np.uint8))},
                   model={"name": model.name, "dims": model.dims, "calibration": {
                       k: getattr(model.calibration, k) for k in ("tau", "tau_percentile", "threshold",
                                                                  "threshold_percentile")},
                       "threshold_reference": threshold_reference(self.session)})

    def cmd_step(self, request: dict) -> None:
        computed = len(self.session.iterations)
        self.session.step()
        self.show(request, computed)

    def cmd_back(self, request: dict) -> None:
        self.session.back()
        self.show(request, len(self.session.iterations))

    def cmd_seek(self, request: dict) -> None:
        self.session.seek(int(request["index"]))
        self.show(request, len(self.session.iterations))

    def cmd_set_tau(self, request: dict) -> None:
        self.session.set_tau(float(request["tau"]))
        self.reply(request, "done")

    def cmd_threshold(self, request: dict) -> None:
        """A person's segmentation threshold: the shown map's segmentation at it (the session keeps it)."""
        if self.cleaned is None:
            raise ItermaskError("run at least one step before choosing a threshold")
        before = self.session.threshold_from_user
        self.session.threshold = request["threshold"]
        try:
            arrays = {"segmentation": self.segmentation()}
        except Exception:
            self.session.threshold_from_user = before
            raise
        self.reply(request, "done", arrays=arrays)

    def cmd_set_mask(self, request: dict) -> None:
        self.session.set_mask(self._load(request["mask"]))
        self.reply(request, "done")

    def cmd_reset(self, request: dict) -> None:
        self.session.reset()
        self.cleaned = None
        self.reply(request, "done")

    def cmd_run(self, request: dict) -> None:
        """Step until converged (or ``max_steps``), a ``progress`` message per step. A ``cancel`` or a failure (e.g.
        out of memory) puts the session back where the run started."""
        before, max_steps = checkpoint(self.session), request.get("max_steps")
        computed, steps = len(self.session.iterations), 0
        try:
            while not self.session.converged and (max_steps is None or steps < max_steps):
                if request["id"] in self.cancelled:
                    self.session = before
                    self.reply(request, "cancelled")
                    return
                self.session.step()
                steps += 1
                self.reply(request, "progress")
        except Exception:
            self.session = before
            raise
        self.show(request, computed)


# After the client has gone, how long the command in flight may take to end before the process leaves anyway.
EXIT_GRACE_S = 2.0


class BadMessage(ItermaskError):
    """A line that is not a command; ``request_id``: its id when one could be read (for the error reply)."""

    def __init__(self, reason: str, request_id: int | None = None):
        super().__init__(reason)
        self.request_id = request_id


def parse_command(line: bytes) -> dict:
    """One protocol line as a command: a JSON object with a ``cmd`` name and an integer ``id`` (``quit`` and
    ``cancel`` need none; ``cancel`` needs the integer id of the ``run`` to stop); else :class:`BadMessage`."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deep, an integer of 5000 digits
        raise BadMessage(f"a worker message must be one line of JSON ({exc})") from None
    if not isinstance(message, dict):
        raise BadMessage("a worker message must be a JSON object")
    request_id = message.get("id") if type(message.get("id")) is int else None  # not true, 1.5 or "1"
    cmd = message.get("cmd")
    if not isinstance(cmd, str):
        raise BadMessage('a worker message needs a "cmd" (the command\'s name)', request_id)
    if cmd == "cancel" and type(message.get("run")) is not int:
        raise BadMessage('"cancel" needs the integer id of the "run" to stop', request_id)
    if cmd not in ("quit", "cancel") and request_id is None:
        raise BadMessage(f'the command {cmd[:40]!r} needs an integer "id"')
    return message


def error_reply(request_id: int | None, message: str) -> dict:
    """An ``error`` reply; ``message`` is cut short, since it may quote a line of any length."""
    return {"id": request_id, "event": "error", "message": message[:1000], "state": None}


def main(folder: str) -> int:
    # Whatever a library prints must not corrupt the protocol: stdout (fd 1) becomes stderr, replies use a copy.
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sending = threading.Lock()  # both threads reply: the reader to lines it cannot read, the main thread to commands

    def send(message: dict) -> None:
        with sending:
            protocol.write(json.dumps(message) + "\n")
            protocol.flush()

    commands: queue.Queue = queue.Queue()
    cancelled: set[int] = set()
    leaving = threading.Event()

    def read_stdin() -> None:
        queued = set()
        try:
            for line in sys.stdin.buffer:
                if not line.strip():
                    continue
                try:
                    message = parse_command(line)
                except BadMessage as exc:
                    send(error_reply(exc.request_id, str(exc)))
                    continue
                if message["cmd"] == "quit":
                    break
                if message["cmd"] == "cancel":  # noted at once: the run it stops is what the main thread is doing
                    cancelled.add(message["run"])
                else:
                    queued.add(message["id"])
                    commands.put(message)
        finally:  # the client went away (or reading failed): stop the run in flight, drop the rest, leave
            cancelled.update(queued)
            leaving.set()
            commands.put(None)
            time.sleep(EXIT_GRACE_S)  # the main thread ends the process before this unless a command is stuck
            print("itermask worker: leaving with a command still running", file=sys.stderr, flush=True)
            os._exit(1)

    threading.Thread(target=read_stdin, daemon=True).start()
    worker = Worker(Path(folder), send, cancelled)
    while (request := commands.get()) is not None and not leaving.is_set():
        try:
            worker.execute(request)
        except Exception as exc:  # reported to the user; the session stays as it was before the command
            message = str(exc) if isinstance(exc, (ItermaskError, IndexError)) else f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            send(error_reply(request["id"], message))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
