"""Training on healthy data, with checkpoints, resume and a final calibration: an IterMask² 2D model pair on
slices, or an IterMask3D unified 3D model on whole volumes."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from itermask.cases import Case, as_listed, read_cases
from itermask.cohort import shard
from itermask.errors import ItermaskError
from itermask.reconstruction import network_input
from itermask.session import check_seed

from .batches import step_batch
from .calibrate import recalibrate
from .config import TrainConfig
from .data import TrainingSet, load_training_set, prepared_cases
from .distributed import Process, start, stop
from .log import TrainingLog
from .state import TrainState, run_identity


def train(config: TrainConfig, resume: bool = True, progress: bool = True, stop_after: int | None = None,
          device: str = "auto", cache: str | Path | None = None) -> Path | None:
    """Train, calibrate and write ``<output>/<name>.pt``; returns its path (under torchrun, the main process
    calibrates and writes it after the others have returned).

    Run alone or under ``torchrun`` (see :mod:`.distributed`): each process trains on its share of every step's
    batch, gradients are averaged, and only the main process writes. Step ``s`` always trains on the same samples
    (:func:`.batches.step_batch`), so the model does not depend on the number of processes, up to rounding.

    A checkpoint (``<output>/checkpoint.ckpt``, see :class:`.state.TrainState`) is written every
    ``checkpoint_every`` steps, so a resumed run — after a crash or a kill — continues exactly where the interrupted
    one last checkpointed (``resume=False``: start over). ``stop_after``: train at most this many steps in this call,
    checkpoint and return None (time-sliced training on a CPU or a job queue); the next call resumes. ``device``:
    ``auto``, ``cpu`` or ``cuda`` (bfloat16 mixed precision). ``cache``: the preprocessing cache folder (default
    ``<output>/preprocessed``, see :mod:`.cache`).
    """
    check_seed(config.seed)
    process = start(device)
    cases = read_cases(config.source, config.modality, report=tqdm.write if progress and process.is_main else None)
    if config.batch_size % process.world:
        raise ItermaskError(f"the batch of {config.batch_size} cannot be shared equally among {process.world} "
                            "processes")
    train_cases, calibration_cases = _split(cases, config.source)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    config.data = [as_listed(c.image, config.source) for c in train_cases]
    torch.manual_seed(config.seed)
    state = TrainState.create(config, run_identity(config, train_cases), process.device)
    checkpoint = out / "checkpoint.ckpt"
    # Whether and from where to resume is settled before the (long) preparation of the data.
    if resume and checkpoint.exists():
        state.load(checkpoint)
    elif config.init_from:
        state.start_from(config.init_from)
    samples = _training_samples(train_cases, state, process, Path(cache) if cache else out / "preprocessed")
    until = config.steps if stop_after is None else min(config.steps, state.step + stop_after)
    fit(state, samples, config, process, until, checkpoint, progress)
    stop()  # no collective follows: the others need not wait while the main process calibrates
    if state.step < config.steps:
        return None
    path = out / f"{config.name}.pt"
    if process.is_main:
        _calibrated(state, config, calibration_cases).save(path)
    return path


def _split(cases: list[Case], source: str) -> tuple[list[Case], list[Case]]:
    """The training cases and the held-out healthy calibration cases; an error when either is missing."""
    train_cases = [c for c in cases if c.split == "train"]
    calibration_cases = [c for c in cases if c.split == "calibration"]
    if not train_cases or not calibration_cases:
        raise ItermaskError(f"{source} needs at least one case with split=train and one with split=calibration "
                            "(held-out healthy data)")
    return train_cases, calibration_cases


def _training_samples(cases: list[Case], state: TrainState, process: Process, cache: Path) -> TrainingSet:
    """Every training case on the model grid; under torchrun each process first prepares its share into the
    ``cache``, then all read all."""
    bundle = state.bundle
    divisor, grid = bundle.networks[bundle.masked_role].divisor, bundle.metadata.grid
    if process.world > 1:
        prepared_cases(shard(cases, process.rank, process.world), grid, bundle.dims, divisor, cache=cache)
        process.barrier()
    return load_training_set(cases, grid, bundle.dims, divisor, cache=cache)


def fit(state: TrainState, samples: TrainingSet, config: TrainConfig, process: Process, until: int,
        checkpoint: Path, progress: bool = True) -> None:
    """Train ``state`` from its step up to step ``until``. The main process logs every step's losses
    (``training_log.csv`` beside the checkpoint) and, every ``checkpoint_every`` steps and at ``until``, saves the
    ``checkpoint``, redraws ``loss.png`` and adds ``samples/step_<step>.png`` (see :class:`.log.TrainingLog`)."""
    models = {role: process.parallel(net) for role, net in state.networks.items()}
    log = TrainingLog(checkpoint.parent, state.step) if process.is_main else None
    bar = tqdm(total=config.steps, initial=state.step, disable=not (progress and process.is_main),
               desc=f"train {config.name}", unit="step")
    for net in models.values():
        net.train()
    try:  # the bar ends its line before an error is printed
        while state.step < until:
            batch = step_batch(samples, config.batch_size, state.bundle.metadata, config.seed, state.step, process.rank,
                               process.world, config.augment)
            losses, recons = _train_step(models, state, batch, config, process)
            _stop_if_diverged(losses, state.step + 1, checkpoint)
            state.step += 1
            bar.update(1)
            bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
            if log:
                log.add(state.step, losses)
                if state.step % config.checkpoint_every == 0 or state.step == until:
                    state.save(checkpoint)
                    log.plot()
                    log.show_reconstructions(state.step, batch, recons)
    finally:
        bar.close()


def _stop_if_diverged(losses: dict[str, float], step: int, checkpoint: Path) -> None:
    """One error line at the first NaN or infinite loss: every later step would train on it, and the weights are
    already spoilt, so nothing more is saved (the last checkpoint, if any, stays as it was)."""
    bad = {role: loss for role, loss in losses.items() if not math.isfinite(loss)}
    if bad:
        raise ItermaskError(f"training diverged at step {step}: loss {bad} (try a smaller --lr or --dae-noise-sd); "
                            f"the last good checkpoint, if any, is {checkpoint}")


def _train_step(models: dict, state: TrainState, batch: dict, config: TrainConfig,
                process: Process) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One optimisation step of every network on this process's share of the batch; returns each network's loss
    over the whole batch (all processes) and its reconstruction of this share."""
    batch = {k: v.to(process.device) for k, v in batch.items()}
    losses, recons = {}, {}
    for role, net in models.items():
        hidden = batch["brain"] if role == "first" else batch["hidden"]
        with torch.autocast(process.device.type, dtype=torch.bfloat16, enabled=process.mixed_precision):
            recon = net(_training_input(role, batch, hidden, state.bundle.uses_frequency)).float()
        squared, weight = _weighted_error(recon, batch["x"], batch["valid"], hidden, config.masked_weight,
                                          config.visible_weight)
        loss = squared / process.sum(weight).clamp_min(1.0)
        state.optimisers[role].zero_grad(set_to_none=True)
        # Gradients are averaged over processes; scaled so, they are those of the loss over the whole batch.
        (loss * process.world).backward()
        state.optimisers[role].step()
        state.schedules[role].step()
        losses[role] = process.sum(loss).item()
        recons[role] = recon.detach().cpu()
    return losses, recons


def _weighted_error(recon: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, hidden: torch.Tensor,
                    masked_weight: float, visible_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The weighted squared error summed over valid (healthy brain) voxels, and the sum of the weights: hidden
    voxels count more than visible ones. Their ratio over the whole batch is the loss."""
    weight = valid * torch.where(hidden, masked_weight, visible_weight)
    return (weight * (recon - target) ** 2).sum(), weight.sum()


def _training_input(role: str, batch: dict, hidden: torch.Tensor, uses_frequency: bool) -> torch.Tensor:
    if role == "denoiser":  # the noise is added in training only: the DAE learns to remove it
        return batch["x"] + batch["noise"]
    x_f = batch["x_f"] if role == "first" or uses_frequency else None
    return network_input(role, batch["x"], x_f, hidden, batch["noise"])


def _calibrated(state: TrainState, config: TrainConfig, calibration_cases: list[Case]):
    """The trained bundle on the CPU, calibrated on the held-out cases, with the run's configuration as its
    ``training`` provenance."""
    bundle = state.bundle.to("cpu")
    for net in bundle.networks.values():
        net.eval()
    bundle.metadata = replace(bundle.metadata, training=config.as_json(leave_out=("output", "source")))
    return recalibrate(bundle, calibration_cases, config.source, config.seed)
