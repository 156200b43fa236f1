"""The worker process against any message (issue 25): random bytes, JSON of random shapes and commands with random
arguments, in random order, fed to a real ``worker.py`` subprocess holding a real session. Each line gets exactly the
replies the protocol promises, the worker still answers a real ``example`` command afterwards, and closing its stdin
ends it within seconds, even with a run in flight or a command that never returns."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from test_hostile_inputs import save_bundle

WORKER = REPO / "IterMaskSlicer" / "IterMaskSlicerLib" / "worker.py"
FINAL = {"done", "cancelled", "error"}
SESSION_COMMANDS = ("initialize", "step", "back", "seek", "set_tau", "set_mask", "reset", "run")
RANDOM_IDS = st.integers(-(2**70), 2**70)
OWN_IDS = iter(range(2**80, 2**81))  # for the commands the test itself sends; random lines never use them


class WorkerProcess:
    """``python worker.py FOLDER`` with a thread collecting its reply lines."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(exist_ok=True)
        self.process = subprocess.Popen([sys.executable, str(WORKER), str(folder)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        env=dict(os.environ, OMP_NUM_THREADS="1"))
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.replies.put(line)

    def send_line(self, line: bytes) -> None:
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def send(self, **command) -> int:
        command.setdefault("id", next(OWN_IDS))
        self.send_line(json.dumps(command).encode())
        return command["id"]

    def reply(self, timeout: float = 60.0) -> dict:
        message = json.loads(self.replies.get(timeout=timeout))
        assert set(message) >= {"id", "event", "state"} and message["event"] in FINAL | {"progress"}, message
        if message["event"] == "error":
            assert isinstance(message["message"], str) and message["state"] is None, message
        return message

    def final(self, request_id) -> dict:
        """The final reply to ``request_id``; every message before it must be that command's progress."""
        while (message := self.reply())["event"] == "progress":
            assert message["id"] == request_id, message
        assert message["id"] == request_id, message
        return message

    def close_stdin_and_wait(self) -> tuple[int, float]:
        """Close stdin; the exit status and the seconds the process took to end (at most 30)."""
        start = time.monotonic()
        self.process.stdin.close()
        try:
            code = self.process.wait(30)
        finally:
            self.process.kill()
        return code, time.monotonic() - start


def example_arrays(worker: WorkerProcess) -> dict:
    """Ask for the built-in example (it needs nilearn, not torch); its reply must be ``done`` with both arrays."""
    reply = worker.final(worker.send(cmd="example"))
    assert reply["event"] == "done", reply
    assert all(Path(p).is_file() for p in reply["arrays"].values()) and len(reply["affine"]) == 4
    return reply


# --- what the random lines are ----------------------------------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4),
                           max_leaves=12)
arguments = st.dictionaries(st.sampled_from(["index", "tau", "mask", "model", "image", "brain", "affine", "policy",
                                             "seed", "max_steps", "run"]) | st.text(max_size=8),
                            json_values, max_size=4)
not_an_id = json_values.filter(lambda v: type(v) is not int)
command_names = st.sampled_from(SESSION_COMMANDS) | st.text(max_size=12).filter(lambda c: c not in ("quit", "cancel"))


@st.composite
def commands(draw) -> tuple[str, bytes, object]:
    """A command with an integer id and arguments of any shape: exactly one final reply, with its id."""
    name = draw(command_names)
    plausible = {"seek": {"index": st.integers(-3, 6)}, "set_tau": {"tau": st.floats(-2.0, 5.0)},
                 "run": {"max_steps": st.integers(0, 3)}}.get(name, {})
    request = {**draw(arguments), **draw(st.fixed_dictionaries({}, optional=plausible)),
               "id": draw(RANDOM_IDS), "cmd": name}
    return "command", json.dumps(request).encode(), request["id"]


@st.composite
def unreadable(draw) -> tuple[str, bytes, object]:
    """A line that is no command: exactly one error reply, with the line's integer id, else null."""
    kind = draw(st.sampled_from(["bytes", "not an object", "no cmd", "bad id", "cancel without run"]))
    if kind == "bytes":
        line = draw(st.binary(min_size=1, max_size=80).filter(lambda b: b"\n" not in b and b.strip()))
        return "unreadable", line, None
    if kind == "not an object":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return "unreadable", json.dumps(value).encode(), None
    message = draw(arguments)
    if kind == "no cmd":
        message.pop("cmd", None)
        message["cmd" if draw(st.booleans()) else "x"] = draw(json_values.filter(lambda v: not isinstance(v, str)))
    elif kind == "bad id":
        message.update(cmd=draw(command_names), id=draw(not_an_id))
    else:
        message.update(cmd="cancel", run=draw(not_an_id))
    request_id = message.get("id") if type(message.get("id")) is int else None
    return "unreadable", json.dumps(message).encode(), request_id


cancels = st.builds(lambda run: ("cancel", json.dumps({"cmd": "cancel", "run": run}).encode(), None),
                    RANDOM_IDS)
lines = st.one_of(commands(), unreadable(), cancels)


def test_the_worker_answers_every_line_and_still_works_after_any_sequence(tmp_path):
    """Random lines, eight at most per example, into one worker that holds a session (an untrained 2D bundle on the
    built-in example: every session command really runs); after each example a real ``example`` command is answered.
    Reusing the worker is sound because every line leaves it where a fresh one after the same lines would be."""
    worker = WorkerProcess(tmp_path / "worker")
    model = save_bundle(tmp_path / "untrained.pt")
    scan = example_arrays(worker)
    ready = worker.final(worker.send(cmd="initialize", model=str(model), image=scan["arrays"]["image"],
                                     brain=scan["arrays"]["brain"], affine=scan["affine"], policy="itermask2",
                                     seed=0, device="cpu"))
    assert ready["event"] == "done", ready

    @settings(max_examples=10, deadline=None, database=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(lines, min_size=1, max_size=8))
    def any_lines(sequence):
        for kind, line, request_id in sequence:
            worker.send_line(line)
            if kind == "command":
                for path in worker.final(request_id).get("arrays", {}).values():
                    os.unlink(path)  # as the client does once it has read them
            elif kind == "unreadable":
                reply = worker.reply()
                assert (reply["id"], reply["event"]) == (request_id, "error"), (line, reply)
        reply = example_arrays(worker)
        for path in reply["arrays"].values():
            os.unlink(path)
        assert worker.replies.empty()  # no line got more replies than the protocol promises

    any_lines()
    code, seconds = worker.close_stdin_and_wait()
    assert code == 0 and seconds < 5, (code, seconds)


def test_closing_stdin_ends_the_worker_mid_run_and_with_a_command_that_never_returns(tmp_path):
    endless = save_bundle(tmp_path / "endless.pt", max_iterations=100_000, min_shrink=0.0)
    worker = WorkerProcess(tmp_path / "worker")
    worker.send_line(b"{not json" + b"x" * (1 << 20))  # a 1 MB line that is no command
    assert worker.reply()["event"] == "error"
    scan = example_arrays(worker)
    arrays = scan["arrays"]
    ready = worker.final(worker.send(cmd="initialize", model=str(endless), image=arrays["image"],
                                     brain=arrays["brain"], affine=scan["affine"], policy="itermask2", seed=0,
                                     device="cpu"))
    assert ready["event"] == "done", ready
    run = worker.send(cmd="run")
    assert worker.reply()["id"] == run  # a step is done: the run is under way, and would not end by itself
    code, seconds = worker.close_stdin_and_wait()
    assert code == 0 and seconds < 5, (code, seconds)

    # A brain mask that is a FIFO nobody writes: opening it blocks for ever, so only leaving anyway ends the worker.
    fifo = tmp_path / "fifo.npy"
    os.mkfifo(fifo)
    worker = WorkerProcess(tmp_path / "worker")
    worker.send(cmd="initialize", model=str(endless), image=arrays["image"], brain=str(fifo),
                affine=scan["affine"], policy="itermask2", seed=0, device="cpu")
    writer = opened_for_writing(fifo)  # once the worker has opened it; it then waits for data that never come
    try:
        code, seconds = worker.close_stdin_and_wait()
    finally:
        os.close(writer)
    assert code == 1 and seconds < 6, (code, seconds)
    assert worker.replies.empty()


def opened_for_writing(fifo: Path, seconds: float = 120.0) -> int:
    """A write end of ``fifo``, as soon as a reader has it open (until then, opening it non-blocking fails)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
