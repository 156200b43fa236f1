"""Batch segmentation of a cohort: sharded across processes as torchrun would, every output exactly once, a summary
table, and skip-existing."""
from __future__ import annotations

import csv
import doctest
import json
import os
import subprocess
import sys

from conftest import MS
from itermask import cohort


def test_docstring_examples():
    assert doctest.testmod(cohort).failed == 0


def _segment(args, env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.Popen([sys.executable, "-m", "itermask.cli", "segment", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_shards_write_every_output_exactly_once(tiny_model, tmp_path):
    cohort_dir = tmp_path / "cohort"
    cohort_dir.mkdir()
    names = ["s1", "s2", "s3", "s4", "s5"]
    for name in names:
        (cohort_dir / f"{name}.nii.gz").symlink_to(MS / "FLAIR.nii.gz")
    (cohort_dir / "s1_lesion.nii.gz").symlink_to(MS / "lesion_mask.nii.gz")   # a mask, not an input
    out = tmp_path / "out"
    args = [str(cohort_dir), "-o", str(out), "--model", str(tiny_model), "--skip-existing"]
    shards = [_segment(args, {"RANK": str(r), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}) for r in (0, 1)]
    logs = [p.communicate(timeout=900) for p in shards]
    assert [p.returncode for p in shards] == [0, 0], logs

    reports = sorted(out.glob("*/report.json"))
    assert [p.parent.name for p in reports] == names
    inputs = [json.loads(p.read_text())["input"] for p in reports]
    assert sorted(inputs) == sorted(str(cohort_dir / f"{n}.nii.gz") for n in names)
    assert not list(out.glob(".*partial*"))
    done = [line for out_text, _ in logs for line in out_text.splitlines() if "wrote" in line]
    assert len(done) == 5, "each scan is segmented by exactly one shard"

    with open(out / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [os.path.basename(r["input"]) for r in rows] == [f"{n}.nii.gz" for n in names]
    assert all(float(r["final_mask_ml"]) >= 0 and r["model"] == "tiny-flair" for r in rows)

    before = {p: p.stat().st_mtime_ns for p in reports}
    again = _segment(args, {})
    text, _ = again.communicate(timeout=300)
    assert again.returncode == 0 and "skipped 5 already segmented" in text
    assert {p: p.stat().st_mtime_ns for p in reports} == before
