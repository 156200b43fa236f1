"""Segmenting a cohort: which inputs this process handles, and the summary table of every scan done so far.

Sharding follows the environment ``torchrun`` (and most cluster launchers) set: process ``RANK`` of ``WORLD_SIZE``
takes every ``WORLD_SIZE``-th input of the sorted list, so each input is done by exactly one process, on one node or
many, with no coordination beyond a shared output folder. Each process rebuilds ``summary.csv`` from the reports on
disk when it finishes, so the last one to finish leaves the complete table.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from .io import SUFFIXES

SUMMARY_COLUMNS = ("input", "model", "policy", "final_mask_ml", "segmentation_ml", "mean_error",
                   "final_mask_ml_healthy_percentile", "mean_error_healthy_percentile", "threshold", "tau_stop",
                   "converged", "seconds", "output")
_MASK_NAMES = ("_brainmask", "_lesion", "_mask")


def process_rank() -> tuple[int, int]:
    """(rank, world size) from ``RANK`` / ``WORLD_SIZE`` (set by torchrun); (0, 1) when run alone."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if not 0 <= rank < world:
        raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return rank, world


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files as given; a folder stands for every image in it except brain or lesion masks (``*_brainmask``,
    ``*_lesion``, ``*_mask``). Sorted and without repeats, so every process sees the same list.

    >>> expand_inputs(["b.nii.gz", "a.nii.gz", "b.nii.gz"])
    [PosixPath('a.nii.gz'), PosixPath('b.nii.gz')]
    """
    out = set()
    for path in map(Path, paths):
        if path.is_dir():
            out.update(f for f in path.iterdir() if f.is_file() and f.name.lower().endswith(SUFFIXES)
                       and not any(f.name.lower().split(".")[0].endswith(m) for m in _MASK_NAMES))
        else:
            out.add(path)
    return sorted(out)


def shard(items: list, rank: int, world: int) -> list:
    """This process's share: every ``world``-th item from ``rank``.

    >>> shard(list("abcde"), 1, 2)
    ['b', 'd']
    """
    return items[rank::world]


def summary_row(report: dict, output: Path) -> dict:
    """One line of ``summary.csv`` from a scan's ``report.json``."""
    score = report["scan_score"]
    percentile = score.get("healthy_percentile", {})
    return {"input": report["input"], "model": report["model"], "policy": report["policy"],
            "final_mask_ml": score["final_mask_ml"], "segmentation_ml": score["segmentation_ml"],
            "mean_error": score["mean_error"], "final_mask_ml_healthy_percentile": percentile.get("final_mask_ml"),
            "mean_error_healthy_percentile": percentile.get("mean_error"), "threshold": report["threshold"],
            "tau_stop": report.get("tau_stop"), "converged": report["converged"], "seconds": report["seconds"],
            "output": str(output)}


def write_summary(out_root: Path) -> Path:
    """``out_root/summary.csv``: one row per finished scan (a ``*/report.json``), in input order; written atomically,
    so concurrent writers never leave half a file."""
    rows = sorted((summary_row(json.loads(p.read_text()), p.parent) for p in out_root.glob("*/report.json")),
                  key=lambda r: r["input"])
    path = out_root / "summary.csv"
    tmp = out_root / f".summary.{os.getpid()}.partial"
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path
