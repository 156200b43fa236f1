"""The preprocessing cache: a prepared case is stored once, read back unchanged, and missed (prepared again) when
its file or a preprocessing setting changes."""
from __future__ import annotations

import os
import shutil
from dataclasses import replace

import torch

from itermask.cases import Case
from itermask.metadata import Grid
from itermask_training.data import prepared_cases

from conftest import MS

GRID = Grid(spacing_mm=6.0, min_size=(1, 32, 32))


def entries(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}


def test_a_prepared_case_is_stored_once_and_read_back_unchanged(tmp_path):
    case = Case(MS / "FLAIR.nii.gz", None, MS / "lesion_mask.nii.gz", "train")
    fresh = prepared_cases([case], GRID, 2, 4)[0]
    stored = prepared_cases([case], GRID, 2, 4, cache=tmp_path)[0]
    first = entries(tmp_path)
    read_back = prepared_cases([case], GRID, 2, 4, cache=tmp_path)[0]
    assert len(first) == 1 and entries(tmp_path) == first, "the second run reads the entry, it does not rewrite it"
    assert not list(tmp_path.glob("*partial*"))
    for a, b, c in zip(fresh, stored, read_back):
        assert a.dtype == c.dtype and torch.equal(a, b) and torch.equal(a, c)
    assert fresh[2].sum() < fresh[1].sum()  # valid: the lesion is left out


def test_a_changed_setting_or_file_is_prepared_again(tmp_path):
    cache = tmp_path / "cache"
    scan = tmp_path / "FLAIR.nii.gz"
    shutil.copy(MS / "FLAIR.nii.gz", scan)
    case = Case(scan, None, None, "train")
    fine = prepared_cases([case], GRID, 2, 4, cache=cache)[0]
    coarser = prepared_cases([case], replace(GRID, spacing_mm=8.0), 2, 4, cache=cache)[0]
    assert len(entries(cache)) == 2 and len(coarser[0]) < len(fine[0])  # fewer axial slices at 8 mm
    os.utime(scan, ns=(0, 0))  # the scan was replaced: same name, another modification time
    prepared_cases([case], GRID, 2, 4, cache=cache)
    assert len(entries(cache)) == 3
