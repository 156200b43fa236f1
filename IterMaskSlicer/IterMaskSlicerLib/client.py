"""The Slicer side of the worker process (:mod:`.worker`): start it, send commands, collect replies without waiting.

Nothing here blocks the caller unless it asks to wait: the worker's stdout is switched to non-blocking mode (pipes
on Windows too, from Python 3.12, Slicer 5.10's Python) and :meth:`WorkerClient.messages` returns whatever complete
lines have arrived. The widget polls it from a QTimer; scripts and tests use :meth:`WorkerClient.wait`. No threads,
no ``processEvents``. Imports neither torch nor Qt.

Inside Slicer the worker runs under ``PythonSlicer``, which is not Python but Slicer's CTKAppLauncher: it sets up the
environment and starts ``python-real`` as its *child*. So the worker is a process tree, started in a process group
of its own and always stopped as a whole (killing the launcher alone would leave python-real computing), and a
python-real that dies shows only as the launcher's exit code 1 and a line it prints on stdout.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from itermask.errors import ItermaskError

WORKER_SCRIPT = Path(__file__).with_name("worker.py")
LAUNCHER = "PythonSlicer"
# What CTKAppLauncher prints on its stdout when the program it launched crashed or was killed.
LAUNCHER_SAW_A_CRASH = b"exit abnormally"


def worker_interpreter() -> str:
    """The program that runs the worker: Slicer's ``PythonSlicer`` launcher when it is on ``PATH`` (inside Slicer
    it always is), else this process's own interpreter (the CLI, the web page, tests).

    Looked up each time a worker starts, never at import: Slicer imports modules before it sets ``sys.executable``,
    which is ``''`` on Linux until then (``SlicerApp-real`` on Windows, a program that must not run the worker)."""
    found = shutil.which(LAUNCHER)
    if found:
        return found
    if sys.executable and "python" in Path(sys.executable).name.lower():
        return sys.executable
    raise ItermaskError(f"cannot start the IterMask worker: Slicer's {LAUNCHER} launcher is not on PATH and this "
                        f"process's interpreter ({sys.executable!r}) is not a Python")


class WorkerDied(ItermaskError):
    """The worker process ended while a command was in flight (killed, crashed, out of memory)."""


class WorkerClient:
    """One worker process, started on the first command (and again after it died).

    Args:
        python: the program that runs the worker (None: :func:`worker_interpreter`, looked up at each start).
        popen: the process runner, ``subprocess.Popen``-compatible (the widget passes one with Slicer's startup
            environment; tests use the default, so both run the same code).
    """

    def __init__(self, python: str | None = None, popen=subprocess.Popen):
        self.python, self.popen = python, popen
        self.process: subprocess.Popen | None = None
        self.folder: Path | None = None
        self._log = None
        self._buffer = b""
        self._next_id = 0
        self._launcher_saw_a_crash = False

    # --- process ------------------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self) -> None:
        self.stop()
        program = self.python or worker_interpreter()
        self.folder = Path(tempfile.mkdtemp(prefix="itermask-worker-"))
        self._log = open(self.folder / "worker.log", "wb")
        if os.name == "nt":  # no console window; a group of its own for taskkill /T
            group = {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
        else:  # a process group of its own: launcher and python-real are stopped together
            group = {"start_new_session": True}
        self.process = self.popen([program, str(WORKER_SCRIPT), str(self.folder)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self._log, **group)
        os.set_blocking(self.process.stdout.fileno(), False)
        self._buffer, self._launcher_saw_a_crash = b"", False

    def _kill_tree(self) -> None:
        """Kill the worker's whole process tree now (a run in flight too: nothing waits behind it)."""
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True,
                           creationflags=subprocess.CREATE_NO_WINDOW)
        else:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:  # the whole group has ended already
                pass

    def stop(self) -> None:
        """Stop the worker at once, whatever it is doing, and delete its folder. Takes milliseconds: it never waits
        for a command in flight (the scene is closing or Slicer is exiting; the session is discarded anyway)."""
        if self.process is not None:
            self._kill_tree()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()
                except OSError:  # a pipe the killed worker left unread
                    pass
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    # --- arrays -------------------------------------------------------------------------------------------------
    def put_array(self, name: str, array: np.ndarray) -> str:
        """An array for the worker to read (written before the command that names it is sent)."""
        if not self.alive:
            self._start()
        path = self.folder / f"in-{name}.npy"
        np.save(path, np.ascontiguousarray(array))
        return str(path)

    @staticmethod
    def take_array(path: str) -> np.ndarray:
        """An array the worker wrote; the file is deleted, so the folder holds only what is still unread."""
        array = np.load(path, allow_pickle=False)
        os.unlink(path)
        return array

    # --- messages -----------------------------------------------------------------------------------------------
    def send(self, cmd: str, **arguments) -> int:
        """Send a command (starting the worker if needed); returns its id, which its replies carry."""
        if not self.alive:
            self._start()
        self._next_id += 1
        line = json.dumps(dict(arguments, id=self._next_id, cmd=cmd)) + "\n"
        try:
            self.process.stdin.write(line.encode())
            self.process.stdin.flush()
        except OSError:
            raise self._died() from None
        return self._next_id

    def messages(self) -> list[dict]:
        """Every complete message that has arrived, without waiting. Raises :class:`WorkerDied` when the worker has
        ended (or its launcher has) and nothing more is to come. A line that is not a protocol message (a library
        printing while the worker imports, the launcher's own output) goes to the worker's log, never to a caller."""
        if self.process is None:
            return []
        ended = False
        while True:
            try:
                chunk = os.read(self.process.stdout.fileno(), 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                ended = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if ended:  # the last line may lack its newline (CTKAppLauncher's own message does)
            lines, self._buffer = lines + [self._buffer], b""
        found = [message for line in lines if (message := self._protocol_message(line)) is not None]
        # A launcher that was killed leaves python-real running with our pipes: its end shows only here.
        if not found and (ended or self.process.poll() is not None):
            raise self._died()
        return found

    def _protocol_message(self, line: bytes) -> dict | None:
        if not line.strip():
            return None
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if isinstance(message, dict) and "event" in message:
            return message
        self._launcher_saw_a_crash |= LAUNCHER_SAW_A_CRASH in line
        self._log.write(b"[stdout] " + line + b"\n")
        return None

    def wait(self, request_id: int, on_message=None, timeout: float | None = None, interval: float = 0.005) -> dict:
        """Block until the final reply to ``request_id``; ``on_message(message)`` for each message meanwhile."""
        start = time.monotonic()
        while True:
            for message in self.messages():
                if on_message is not None:
                    on_message(message)
                if message.get("id") == request_id and message["event"] != "progress":
                    return message
            if timeout is not None and time.monotonic() - start > timeout:
                raise TimeoutError(f"the IterMask worker did not answer within {timeout} s")
            time.sleep(interval)

    def _died(self) -> WorkerDied:
        crashed_under_launcher = self._launcher_saw_a_crash
        self._kill_tree()  # whatever of the tree is left (python-real, when only its launcher was killed)
        code = self.process.wait()
        self._log.flush()
        tail = [line for line in (self.folder / "worker.log").read_text(errors="replace").strip().splitlines()
                if not line.startswith("[stdout]")][-3:]
        self.stop()
        if crashed_under_launcher:
            how = ("ended abnormally: its Python (python-real, under Slicer's PythonSlicer launcher) was killed or "
                   "crashed, e.g. by the out-of-memory killer")
        elif code < 0:
            how = f"was killed (signal {-code})"
        else:
            how = f"stopped (exit code {code})"
        detail = f" Last output: {' | '.join(tail)}" if tail else ""
        return WorkerDied(f"The IterMask worker process {how}. Nothing was changed; the next action starts a new "
                          f"worker.{detail}")
