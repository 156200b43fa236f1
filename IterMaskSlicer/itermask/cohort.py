"""Segmenting a cohort: which inputs this process handles, and the summary table of every scan done so far.

Sharding follows the environment ``torchrun`` (and most cluster launchers) set: process ``RANK`` of ``WORLD_SIZE``
takes every ``WORLD_SIZE``-th input of the sorted list, so each input is done by exactly one process, on one node or
many, with no coordination beyond a shared output folder. Each process rebuilds ``summary.csv`` from the reports on
disk when it finishes, so the last one to finish leaves the complete table.

Each scan's results are written into a hidden ``.<name>.*.partial`` folder that is renamed into place when complete.
The writer holds a lock on it, so a run can tell a partial folder left by a killed process (removed, when a run
starts and when it ends) from one another process is writing now (left alone). A scan that fails leaves a record in
``.failures/`` until it succeeds, so the summary lists it, whichever process wrote it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections import defaultdict
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ._shared import atomic_file, write_csv
from .errors import ItermaskError, shown
from .io import SUFFIXES, is_dicom, scan_stem

try:
    import fcntl
except ImportError:  # Windows: partial folders are then never removed, only left out of the summary
    fcntl = None

SUMMARY_COLUMNS = ("input", "model", "policy", "final_mask_ml", "segmentation_ml", "mean_error",
                   "final_mask_ml_healthy_percentile", "mean_error_healthy_percentile", "threshold", "tau_stop",
                   "converged", "seconds", "output", "status", "error")
FAILURES = ".failures"
_MASK_NAMES = ("_brainmask", "_lesion", "_mask")
# Bytes a partial folder's name adds to the scan's: the dots, mkdtemp's random characters, ".partial", and a margin.
_PARTIAL_EXTRA_BYTES = 32


def process_rank() -> tuple[int, int]:
    """(rank, world size) from ``RANK`` / ``WORLD_SIZE`` (set by torchrun); (0, 1) when run alone. A one-line
    error for a value that is not a whole number or a rank outside 0 … WORLD_SIZE − 1."""
    rank, world = _environment_integer("RANK", 0, minimum=0), _environment_integer("WORLD_SIZE", 1, minimum=1)
    if rank >= world:
        raise ItermaskError(f"RANK {rank} is outside WORLD_SIZE {world} (the ranks are 0 to {world - 1})")
    return rank, world


def local_rank() -> int:
    """This process's GPU on its node, from ``LOCAL_RANK`` (set by torchrun); 0 when run alone. A one-line error
    for a value that is not a whole number or not below WORLD_SIZE."""
    rank, world = _environment_integer("LOCAL_RANK", 0, minimum=0), process_rank()[1]
    if rank >= world:
        raise ItermaskError(f"LOCAL_RANK {rank} is outside WORLD_SIZE {world} (the ranks are 0 to {world - 1})")
    return rank


def _environment_integer(name: str, default: int, minimum: int) -> int:
    """The environment variable ``name`` as a whole number ≥ ``minimum`` (plain ASCII digits: not ``1.0``, ``1_0``
    or ``-1``); ``default`` when it is not set."""
    text = os.environ.get(name)
    if text is None:
        return default
    if not re.fullmatch(r"\s*[0-9]{1,18}\s*", text) or int(text) < minimum:
        raise ItermaskError(f"the environment variable {name} must be a whole number from {minimum}, "
                            f"got {shown(text)}")
    return int(text)


def expand_inputs(paths: list[str | Path]) -> list:
    """Files as given; a folder stands for every image in it except brain or lesion masks (``*_brainmask``,
    ``*_lesion``, ``*_mask``), or for every DICOM series in it (:class:`~itermask.dicom.DicomSeries`). Sorted and
    without repeats, so every process sees the same list.

    >>> expand_inputs(["b.nii.gz", "a.nii.gz", "b.nii.gz"])
    [PosixPath('a.nii.gz'), PosixPath('b.nii.gz')]
    """
    out = set()
    for path in map(Path, paths):
        out.update(scans_in_folder(path) if path.is_dir() else [path])
    return sorted(out, key=lambda scan: (not isinstance(scan, Path), scan))


def scans_in_folder(folder: Path) -> list:
    """The scans directly in ``folder``, masks left out, or else the DICOM series in it and below; a one-line
    error for a folder that has neither (empty, or other files)."""
    entries = list(folder.iterdir())
    if not entries:
        raise ItermaskError(f"{folder} is empty")
    scans = [f for f in entries if f.is_file() and f.name.lower().endswith(SUFFIXES)
             and not any(f.name.lower().split(".")[0].endswith(m) for m in _MASK_NAMES)]
    if scans:
        return scans
    # DICOM series often sit one folder down (one per series) and have no suffix.
    files = [f for e in entries for f in ([e] if e.is_file() else e.iterdir() if e.is_dir() else []) if f.is_file()]
    if any(is_dicom(f) for f in files[:100]):
        from .dicom import find_series

        return find_series(folder)
    raise ItermaskError(f"{folder} holds no scans ({', '.join(SUFFIXES)}; subfolders are not searched)")


def output_names(inputs: list) -> dict:
    """The output folder name of each input: its stem, unless other inputs share it. Then the parent folders that
    tell them apart come first, and inputs in one folder get their format last, so names never depend on the order.
    A DICOM series is named like a file ``<its folder>/<number>_<description>``.

    >>> names = output_names([Path("a/scan.nii.gz"), Path("b/scan.nii.gz"), Path("b/scan.nrrd"), Path("c.nii.gz")])
    >>> list(names.values())
    ['a_scan', 'b_scan_nii_gz', 'b_scan_nrrd', 'c']
    """
    as_paths = {getattr(scan, "path", scan): scan for scan in inputs}  # a DicomSeries by its .path
    by_stem = defaultdict(list)
    for path in as_paths:
        by_stem[scan_stem(path)].append(path)
    names = {}
    for stem, paths in by_stem.items():
        names.update(_distinct_names(stem, paths))
    if len(set(names.values())) < len(names):
        twice = sorted(str(as_paths[p]) for p in names if list(names.values()).count(names[p]) > 1)
        raise ItermaskError(f"the same scan is given twice: {', '.join(twice)}")
    return {as_paths[path]: names[path] for path in as_paths}


def _distinct_names(stem: str, paths: list[Path]) -> dict[Path, str]:
    if len(paths) == 1:
        return {paths[0]: stem}
    folders = [p.absolute().parent for p in paths]
    distinct = set(folders)
    depth = 0
    while len({f.parts[len(f.parts) - depth:] for f in distinct}) < len(distinct):
        depth += 1
    names = {}
    for path, folder in zip(paths, folders):
        parts = [*folder.parts[len(folder.parts) - depth:], stem]
        if folders.count(folder) > 1:
            parts.append(_format_name(path))
        names[path] = "_".join(parts)
    return names


def _format_name(path: Path) -> str:
    """``nii_gz`` for ``scan.nii.gz``, ``nrrd`` for ``scan.nrrd``."""
    suffix = next((s for s in SUFFIXES if path.name.lower().endswith(s)), path.suffix)
    return suffix.lstrip(".").replace(".", "_")


@contextmanager
def partial_folder(out_root: Path, name: str):
    """A new, locked ``out_root/.<name>.*.partial`` folder for one scan's results, removed if the block fails; the
    block renames it into place as ``out_root/name`` when it succeeds. Made before the computation, so an output
    folder that cannot be written (read-only, ``name`` too long) fails at once. ``<name>`` is cut short where the
    whole would be too long: any ``name`` the file system can hold gets its output folder."""
    try:  # the file system says whether it can hold the name (as "File name too long"), before the computation
        (out_root / name).lstat()
    except FileNotFoundError:
        pass
    room = _name_max(out_root) - _PARTIAL_EXTRA_BYTES
    shortened = os.fsencode(name)[:room].decode(sys.getfilesystemencoding(), "ignore")  # never half a character
    with ExitStack() as held:
        with _locked(out_root, shared=True):  # no sweep sees the folder between being made and being locked
            partial = Path(tempfile.mkdtemp(prefix=f".{shortened}.", suffix=".partial", dir=out_root))
            held.enter_context(_locked(partial))
        try:
            yield partial
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise


def _name_max(folder: Path) -> int:
    """The longest file name, in bytes, the file system of ``folder`` holds."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # Windows has no pathconf; 255 characters are at least 255 bytes
        return 255


def remove_stale_partials(out_root: Path) -> list[Path]:
    """Remove the ``.*.partial`` folders no process is writing (left by a killed run); returns them. Writers make
    and lock their folders under a shared lock on ``out_root`` that this takes exclusively, so an unlocked folder
    is stale however young it is."""
    removed = []
    with _locked(out_root, shared=False):
        for folder in out_root.glob(".*.partial"):
            if folder.is_symlink() or not folder.is_dir():  # not a folder a writer made
                continue
            try:  # its writer may rename it into place, and unlock it, at any moment
                with _locked(folder, wait=False) as handle:
                    if handle is not None and _is_at(handle, folder):
                        shutil.rmtree(folder, ignore_errors=True)
                        removed.append(folder)
            except OSError:
                continue
    return removed


@contextmanager
def _locked(path: Path, shared: bool = False, wait: bool = True):
    """A lock on the file or folder ``path`` for the block, released when it ends or its process dies. Yields the
    open handle, or None where another process holds the lock (``wait`` False) or the file system has no locks
    (Windows, some network mounts): then partial folders are never removed, only left out of the summary."""
    if fcntl is None:
        yield None
        return
    handle = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
            locked = True
        except OSError:  # BlockingIOError: held by another process; else no locks here
            locked = False
        yield handle if locked else None
    finally:
        os.close(handle)


def _is_at(handle: int, path: Path) -> bool:
    """Whether the open ``handle`` is still the file at ``path``."""
    try:
        return os.path.samestat(os.fstat(handle), os.stat(path))
    except OSError:
        return False


def record_failure(out_root: Path, name: str, input_path: Path, reason: str) -> None:
    """Note that ``input_path`` (output folder ``name``) failed, for the summary; best effort, since the output
    folder itself may be what failed."""
    record = json.dumps({"input": str(input_path), "output": str(out_root / name), "error": reason})
    try:
        (out_root / FAILURES).mkdir(exist_ok=True)
        with atomic_file(_failure_path(out_root, name), "w") as handle:
            handle.write(record)
    except OSError:
        pass


def clear_failure(out_root: Path, name: str) -> None:
    _failure_path(out_root, name).unlink(missing_ok=True)


def _failure_path(out_root: Path, name: str) -> Path:
    # Hashed: the name may be the very thing too long for the file system.
    return out_root / FAILURES / (hashlib.sha1(name.encode()).hexdigest()[:20] + ".json")


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
            "output": str(output), "status": "ok", "error": ""}


def failure_row(input_path: str, output: str, reason: str) -> dict:
    return {"input": input_path, "output": output, "status": "failed", "error": reason}


def summary_rows(out_root: Path) -> list[dict]:
    """Every scan in ``out_root``: finished ones (``<name>/report.json``; hidden partial folders are not finished),
    and failed ones (``.failures/``; a failure after an earlier success is the newer news). In input order."""
    rows = {}
    for report in out_root.glob("*/report.json"):
        if not report.parent.name.startswith("."):
            rows[report.parent.name] = _row_of_report(report)
    for record in (out_root / FAILURES).glob("*.json"):
        try:
            failure = json.loads(record.read_text())
            rows[Path(failure["output"]).name] = failure_row(failure["input"], failure["output"], failure["error"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a record being replaced right now; the next summary has it
    return sorted(rows.values(), key=lambda r: (str(r["input"]), r["output"]))


def _row_of_report(report: Path) -> dict:
    try:
        return summary_row(json.loads(report.read_text()), report.parent)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return failure_row("", str(report.parent), f"unreadable report.json ({type(exc).__name__})")


def write_summary(out_root: Path) -> Path:
    """``out_root/summary.csv``: one row per scan, finished or failed (see :func:`summary_rows`); written atomically,
    so concurrent writers never leave half a file."""
    path = out_root / "summary.csv"
    write_csv(path, summary_rows(out_root), SUMMARY_COLUMNS)
    return path
