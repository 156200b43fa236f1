"""Small helpers that the core, training and evaluation would otherwise each write again: figures without a
display, files that appear whole or not at all, CSV tables, voxel volumes and the compute device.

Private: not part of the library's interface. torch is imported only where a device is chosen, so the rest serves
code that runs before torch is installed (Slicer lists models first).
"""
from __future__ import annotations

import csv
import os
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from .errors import ItermaskError


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend: figures are only ever written to files, and Agg needs no display
    (a server, a worker process, a CI machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_args) -> Iterator[IO]:
    """A handle on ``.<name>.<pid>.partial`` beside ``path`` that is renamed onto ``path`` when the block ends
    without error: readers and concurrent writers never see half a file, and a failed write (a full disk, a killed
    block) leaves no temporary file behind. ``mode`` and ``open_args`` as for :func:`open`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, mode, **open_args) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_csv(path: str | os.PathLike, rows: list[dict], columns=None) -> None:
    """``rows`` (dicts) as a CSV file with a header, written atomically (:func:`atomic_file`). ``columns``: the
    header, default the first row's keys in their order; a key a row lacks is an empty cell."""
    with atomic_file(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns or rows[0]), restval="")
        writer.writeheader()
        writer.writerows(rows)


def voxel_ml(affine: np.ndarray) -> float:
    """The volume in ml of one voxel of a grid whose 4×4 (or 3×3) voxel-to-world ``affine`` is in mm.

    >>> round(voxel_ml(np.diag([2.0, 2.0, 2.5, 1.0])), 9)
    0.01
    """
    return abs(float(np.linalg.det(np.asarray(affine)[:3, :3]))) / 1000.0


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """The voxel size in mm along each array axis of a grid whose voxel-to-world ``affine`` is in mm.

    >>> voxel_spacing(np.diag([2.0, 1.0, 2.5, 1.0]))
    (2.0, 1.0, 2.5)
    """
    return tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def choose_device(device: str = "auto", index: int | None = None):
    """The ``torch.device`` to compute on: ``cpu``, ``cuda`` (an error when PyTorch sees no GPU) or ``auto`` (CUDA
    when available, else CPU). ``index``: which GPU (e.g. torchrun's ``LOCAL_RANK``); default the current one."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ItermaskError(f"unknown device {device!r} (choose auto, cpu or cuda)")
    if device == "cuda" and not torch.cuda.is_available():
        raise ItermaskError("--device cuda was asked for but no CUDA GPU is available")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda") if index is None else torch.device("cuda", index)
