"""Training under torchrun: a real 2-process DistributedDataParallel run on CPU (gloo) reaches the model a single
process reaches with the same whole-step batch, and a run killed mid-way resumes to the same checkpoint."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from itermask import ModelBundle
from itermask.cases import read_manifest
from itermask.cli import main
from itermask.reconstruction import network_input
from itermask_training.batches import training_batch
from itermask_training.data import load_training_set

from test_training import train_args

STEPS = ["--steps", "8", "--checkpoint-every", "2"]


def torchrun(folder, processes: int = 2) -> subprocess.Popen:
    """``torchrun --standalone --nproc-per-node N -m itermask.cli train …``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "itermask.cli", *train_args(folder, *STEPS)]
    return subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def descendants(pid: int) -> list[int]:
    """Every process ``pid`` started, however deep (torchrun starts its workers in sessions of their own)."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return [d for child in children for d in (child, *descendants(child))]


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    return output


def weights(folder) -> dict[str, dict[str, torch.Tensor]]:
    bundle = ModelBundle.load(folder / "t.pt")
    return {role: net.state_dict() for role, net in bundle.networks.items()}


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    finished(torchrun(folder))
    return folder


def reconstructions(folder) -> dict[str, torch.Tensor]:
    """Each network's output for a batch of real slices (the calibration scan's), hidden as in training."""
    bundle = ModelBundle.load(folder / "t.pt")
    samples = load_training_set(read_manifest(folder / "cases.csv")[1:], bundle.metadata.grid, 2,
                                bundle.networks["masked"].divisor)
    batch = training_batch(samples, 8, bundle.metadata, torch.Generator().manual_seed(1), augment=False)
    with torch.no_grad():
        return {role: net(network_input(role, batch["x"], batch["x_f"],
                                        batch["brain"] if role == "first" else batch["hidden"], batch["noise"]))
                for role, net in bundle.networks.items()}


def test_two_processes_train_the_model_one_process_trains(two_process_run, tmp_path):
    assert main(train_args(tmp_path, *STEPS)) == 0
    one, two = reconstructions(tmp_path), reconstructions(two_process_run)
    for role in one:
        # Same samples, gradients summed in another order: the same function up to float rounding. (Not the same
        # weights: a convolution bias followed by GroupNorm does not change the output, so its gradient is rounding
        # noise, which Adam scales up to full-size steps.)
        assert torch.allclose(one[role], two[role], atol=1e-4), role
        assert one[role].abs().max() > 0.5
    a, b = ModelBundle.load(tmp_path / "t.pt").calibration, ModelBundle.load(two_process_run / "t.pt").calibration
    assert a.tau == pytest.approx(b.tau, rel=1e-4) and a.threshold == pytest.approx(b.threshold, rel=1e-3)
    assert len(list((two_process_run / "preprocessed").glob("*.npz"))) == 1  # the one training scan, prepared once
    # Only the main process wrote: one log row per step and network, with the loss over the whole batch.
    rows_one = (tmp_path / "training_log.csv").read_text().splitlines()
    rows_two = (two_process_run / "training_log.csv").read_text().splitlines()
    assert len(rows_two) == 1 + 8 * 2
    for a, b in zip(rows_one[1:], rows_two[1:]):
        assert a.split(",")[:2] == b.split(",")[:2]
        assert float(a.split(",")[2]) == pytest.approx(float(b.split(",")[2]), rel=1e-4)
    assert sorted(p.name for p in (two_process_run / "samples").iterdir()) == [
        f"step_{s:06d}.png" for s in (2, 4, 6, 8)]


def test_a_killed_run_resumes_to_the_same_model(two_process_run, tmp_path):
    run = torchrun(tmp_path)
    checkpoint = tmp_path / "checkpoint.ckpt"
    deadline = time.monotonic() + 600
    while not checkpoint.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in [*descendants(run.pid), run.pid]:  # both workers and torchrun, mid-run, as a crash would
        os.kill(pid, signal.SIGKILL)
    run.communicate()
    assert checkpoint.exists() and not (tmp_path / "t.pt").exists(), "killed after a checkpoint, before the end"
    step = torch.load(checkpoint, weights_only=True)["step"]
    assert step < 8
    finished(torchrun(tmp_path))
    resumed, straight = weights(tmp_path), weights(two_process_run)
    for role in straight:
        for name, weight in straight[role].items():
            assert torch.equal(weight, resumed[role][name]), (role, name)
    assert (tmp_path / "training_log.csv").read_text() == (two_process_run / "training_log.csv").read_text()
