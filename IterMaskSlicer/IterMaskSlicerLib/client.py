"""The Slicer side of the worker process (:mod:`.worker`): start it, send commands, collect replies without waiting.

Nothing here blocks the caller unless it asks to wait: the worker's stdout is switched to non-blocking mode (pipes
on Windows too, from Python 3.12, Slicer 5.10's Python) and :meth:`WorkerClient.messages` returns whatever complete
lines have arrived. The widget polls it from a QTimer; scripts and tests use :meth:`WorkerClient.wait`. No threads,
no ``processEvents``. Imports neither torch nor Qt.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from itermask.errors import ItermaskError

WORKER_SCRIPT = Path(__file__).with_name("worker.py")


class WorkerDied(ItermaskError):
    """The worker process ended while a command was in flight (killed, crashed, out of memory)."""


class WorkerClient:
    """One worker process, started on the first command (and again after it died).

    Args:
        python: the interpreter that runs the worker; ``sys.executable`` is ``PythonSlicer`` inside Slicer.
        popen: the process runner, ``subprocess.Popen``-compatible (the widget passes one with Slicer's startup
            environment; tests use the default, so both run the same code).
    """

    def __init__(self, python: str = sys.executable, popen=subprocess.Popen):
        self.python, self.popen = python, popen
        self.process: subprocess.Popen | None = None
        self.folder: Path | None = None
        self._log = None
        self._buffer = b""
        self._next_id = 0

    # --- process ------------------------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _start(self) -> None:
        self.stop()
        self.folder = Path(tempfile.mkdtemp(prefix="itermask-worker-"))
        self._log = open(self.folder / "worker.log", "wb")
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window on Windows
        self.process = self.popen([self.python, str(WORKER_SCRIPT), str(self.folder)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=self._log, creationflags=flags)
        os.set_blocking(self.process.stdout.fileno(), False)
        self._buffer = b""

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the worker to leave (kill it if it does not) and delete its folder."""
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    self.process.stdin.write(b'{"cmd": "quit"}\n')
                    self.process.stdin.close()
                    self.process.wait(timeout)
                except (OSError, subprocess.TimeoutExpired):
                    self.process.kill()
                    self.process.wait()
            self.process.stdout.close()
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
        """Every complete message that has arrived, without waiting. Raises :class:`WorkerDied` when the process
        has ended and nothing more is to come."""
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
        found = [json.loads(line) for line in lines if line.strip()]
        if ended and not found:
            raise self._died()
        return found

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
        try:
            code = self.process.wait(5)  # its output has ended; let it finish exiting
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.flush()
        tail = (self.folder / "worker.log").read_text(errors="replace").strip().splitlines()[-3:]
        self.stop()
        how = f"was killed (signal {-code})" if code is not None and code < 0 else f"stopped (exit code {code})"
        detail = f" Last output: {' | '.join(tail)}" if tail else ""
        return WorkerDied(f"The IterMask worker process {how}. Nothing was changed; the next action starts a new "
                          f"worker.{detail}")
