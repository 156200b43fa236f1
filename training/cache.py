"""The preprocessing cache: each training case resampled to the model grid, normalised and masked once, then read
back in a fraction of a second by every later run, process and node (the folder may be shared).

An entry's name is a hash of everything its arrays depend on — the files (path, size, modification time), the
preprocessing settings and the source code of the preprocessing itself — so a changed scan, setting or algorithm
never reads a stale entry; it simply misses and is prepared again.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from itermask._shared import atomic_file

ARRAYS = ("image", "brain", "valid")


def entry_key(files: list[Path | None], settings: dict, code: list) -> str:
    """A hex digest of the input ``files`` (None entries allowed), the ``settings`` (JSON-able) and the source of
    the ``code`` objects (modules or functions) that turn the files into arrays."""
    described = [None if f is None else file_fingerprint(f) for f in files]
    sources = [inspect.getsource(obj) for obj in code]
    text = json.dumps({"files": described, "settings": settings, "code": sources}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_fingerprint(path: Path) -> list:
    """``[resolved path, size in bytes, modification time in ns]``: a file changed or replaced gets another one."""
    stat = os.stat(path)
    return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]


def cached_arrays(folder: Path | None, key: str, compute: Callable[[], tuple[torch.Tensor, ...]]
                  ) -> tuple[torch.Tensor, ...]:
    """``(image, brain, valid)`` from ``folder/<key>.npz``, or ``compute()``-d and stored there (no cache when
    ``folder`` is None). Entries are written whole or not at all, so processes may fill one folder at once."""
    if folder is None:
        return compute()
    path = Path(folder) / f"{key}.npz"
    if path.exists():
        with np.load(path) as stored:
            return tuple(torch.from_numpy(stored[name]) for name in ARRAYS)
    arrays = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        np.savez(handle, **{name: a.numpy() for name, a in zip(ARRAYS, arrays)})
    return arrays
