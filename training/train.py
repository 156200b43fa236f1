"""Training on healthy data, with checkpoints, resume and a final calibration: an IterMask² 2D model pair on
slices, or an IterMask3D unified 3D model on whole volumes."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from itermask.bundle import LAYOUTS, ModelBundle, check_modality, load_model
from itermask.errors import ItermaskError
from itermask.cohort import shard
from itermask.reconstruction import network_input
from itermask.session import check_seed

from .batches import step_batch
from .calibrate import calibrate, calibrate_one_shot
from .data import load_training_set, prepared_cases, read_cases
from .distributed import Process, start, stop
from .log import TrainingLog

# The paper's frequency cut-off in cycles per mm: radius 15 on 128² slices of ≈1.875 mm (2D), on 192³ at 1 mm (3D).
PAPER_CUTOFF_PER_MM = {2: 15 / (128 * 1.875), 3: 15 / 192}


# Sized for a CPU: a 3D pass over a brain at 3 mm (about 48 × 56 × 48 voxels) takes ≈0.2 s on two cores.
DEFAULTS_BY_DIMS = {
    2: {"steps": 1800, "batch_size": 16, "channels": (16, 32, 64, 128), "spacing_mm": 2.0, "size": 96},
    3: {"steps": 1500, "batch_size": 2, "channels": (8, 16, 32, 64), "spacing_mm": 3.0, "size": 48},
}


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in the bundle's ``training`` metadata.

    ``dims`` 2: IterMask² (a first-iteration and a masked network on axial slices); 3: IterMask3D (one unified
    network on whole volumes that also sees fully hidden brains, ``whole_brain_fraction`` of the samples).
    ``size``: the smallest model grid side in voxels (in-plane for 2D; every side for 3D).

    ``method`` ``ae`` or ``dae`` trains an evaluation baseline on the same backbone and data instead: an autoencoder
    (the UNet without skip connections) or a denoising autoencoder that removes coarse noise of ``dae_noise_sd``
    (z-score units; the paper's 0.2 of the image range ≈ 1.2 SD), ``signed`` or hyper-intense only (``positive``).
    ``frequency=False`` is the spatial-only ablation: the masked (unified) network never sees ``x_f``.
    ``augment``: flips, small affine and elastic deformations, bias field, gamma and noise (see :mod:`.augment`).
    ``batch_size`` is the whole step's batch, shared among the processes when several train together.
    """

    source: str                   # CSV manifest or folder of scans (see data.read_cases)
    output: str
    name: str
    modality: str
    dims: int = 2
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    channels: tuple[int, ...] = (16, 32, 64, 128)
    spacing_mm: float = 2.0
    size: int = 96
    mask_coarse_px: float = 7.5   # 2D: paper 10 px on 128²; the same share of the field of view on 96²
    mask_cells_mm: tuple[float, ...] = (2.0, 4.0, 8.0)  # 3D: paper 1/2, 1/4, 1/8 of a 1 mm grid
    whole_brain_fraction: float = 0.25
    method: str = "itermask"
    frequency: bool = True
    dae_noise: str = "positive"
    dae_noise_sd: float = 1.2
    dae_noise_cell_mm: float = 15.0  # paper: 16² noise on 128² slices of ≈1.9 mm
    augment: bool = True
    masked_weight: float = 1.0    # loss weight of hidden voxels; visible voxels get ``visible_weight``
    visible_weight: float = 0.1
    checkpoint_every: int = 200
    seed: int = 0
    init_from: str | None = None  # a bundle to fine-tune (same method, dims and widths) instead of a fresh start
    data: list = field(default_factory=list)

    @property
    def radius(self) -> float:
        """The frequency radius on a ``size`` grid that keeps the paper's physical cut-off (12 on 96² at 2 mm)."""
        return round(PAPER_CUTOFF_PER_MM[self.dims] * self.size * self.spacing_mm, 3)

    def metadata(self) -> dict:
        if self.method not in LAYOUTS:
            raise ValueError(f"unknown method {self.method!r} (choose from {', '.join(LAYOUTS)})")
        if self.dims == 2:
            min_size = [1, self.size, self.size]
            masks = {"patches": 1000, "sides": [4, 8, 16], "coarse_px": self.mask_coarse_px}
        else:
            min_size = [self.size] * 3
            masks = {"points": 100_000, "cells_mm": list(self.mask_cells_mm),
                     "whole_brain_fraction": self.whole_brain_fraction}
        method = {"name": self.method}
        if self.method == "dae":
            method.update(noise=self.dae_noise, noise_sd=self.dae_noise_sd, noise_cell_mm=self.dae_noise_cell_mm)
        return {
            "name": self.name, "modality": check_modality(self.modality), "dims": self.dims,
            "networks": list(LAYOUTS[self.method][self.dims]), "method": method,
            "architecture": {"name": "unet", "channels": list(self.channels), "skips": self.method != "ae"},
            "grid": {"spacing_mm": self.spacing_mm, "min_size": min_size, "orientation": "RAS axial"},
            "normalisation": "iterative-zscore",
            "frequency": {"radius": self.radius, "reference_size": self.size, "masked_input": self.frequency},
            "policy": {"default": "itermask2" if self.dims == 2 else "itermask3d", "first_unmask_fraction": 0.4,
                       "min_shrink": 0.01, "max_iterations": 50, "gamma": 0.05, "path_step_fraction": 0.01},
            "masks": masks,
            "calibration": {},
        }


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


def train(config: TrainConfig, resume: bool = True, progress: bool = True, stop_after: int | None = None,
          device: str = "auto", cache: str | Path | None = None) -> Path | None:
    """Train, calibrate and write ``<output>/<name>.pt``; returns its path (under torchrun, the main process
    calibrates and writes it after the others have returned).

    Run alone or under ``torchrun`` (see :mod:`.distributed`): each process trains on its share of every step's
    batch, gradients are averaged, and only the main process writes. Step ``s`` always trains on the same samples
    (:func:`.batches.step_batch`), so the model does not depend on the number of processes, up to rounding.

    A checkpoint (``<output>/checkpoint.ckpt``) is written every ``checkpoint_every`` steps with the networks,
    optimisers and schedules, so a resumed run — after a crash or a kill — continues exactly where the interrupted
    one last checkpointed. The loss of every step goes to ``<output>/training_log.csv``; each checkpoint redraws
    ``loss.png`` and adds ``samples/step_<step>.png`` (a training sample, what was hidden, its reconstruction).
    ``stop_after``: train at most this many steps in this call, checkpoint and return None (time-sliced training
    on a CPU or a job queue); the next call resumes. ``device``: ``auto``, ``cpu`` or ``cuda`` (bfloat16 mixed
    precision). ``cache``: the preprocessing cache folder (default ``<output>/preprocessed``, see :mod:`.cache`).
    """
    check_seed(config.seed)
    process = start(device)
    cases = read_cases(config.source, config.modality, report=tqdm.write if progress and process.is_main else None)
    if config.batch_size % process.world:
        raise ItermaskError(f"the batch of {config.batch_size} cannot be shared equally among {process.world} "
                            "processes")
    torch.manual_seed(config.seed)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    train_cases = [c for c in cases if c.split == "train"]
    calibration_cases = [c for c in cases if c.split == "calibration"]
    if not train_cases or not calibration_cases:
        raise ItermaskError(f"{config.source} needs at least one case with split=train and one with "
                            "split=calibration (held-out healthy data)")
    config.data = [as_listed(c.image, config.source) for c in train_cases]
    bundle = ModelBundle.create(config.metadata())
    # Whether and from where to resume is settled before the (long) preparation of the data.
    step, checkpoint, identity = 0, out / "checkpoint.ckpt", run_identity(config, train_cases)
    state = resume_state(checkpoint, identity) if resume and checkpoint.exists() else None
    if state:
        step = int(state["step"])
        _load_states(checkpoint, state["networks"], bundle.networks)
    elif config.init_from:
        _initialise_from(bundle, config.init_from)
    divisor = bundle.networks[bundle.masked_role].divisor
    grid, cache = bundle.metadata["grid"], Path(cache) if cache else out / "preprocessed"
    if process.world > 1:  # each process prepares its share of the cases into the cache; then all read all
        prepared_cases(shard(train_cases, process.rank, process.world), grid, config.dims, divisor, cache=cache)
        process.barrier()
    samples = load_training_set(train_cases, grid, config.dims, divisor, cache=cache)
    models = {role: process.parallel(net) for role, net in bundle.networks.items()}
    optimisers = {role: torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
                  for role, net in bundle.networks.items()}
    schedules = {role: torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s / config.steps, 1.0))))
        for role, opt in optimisers.items()}
    if state:
        _load_states(checkpoint, state["optimisers"], optimisers)
        _load_states(checkpoint, state["schedules"], schedules)
    last_step = config.steps if stop_after is None else min(config.steps, step + stop_after)
    log = TrainingLog(out, step) if process.is_main else None
    bar = tqdm(total=config.steps, initial=step, disable=not (progress and process.is_main),
               desc=f"train {config.name}", unit="step")
    for net in models.values():
        net.train()
    while step < last_step:
        batch = step_batch(samples, config.batch_size, bundle.metadata, config.seed, step, process.rank,
                           process.world, config.augment)
        losses, recons = _train_step(models, optimisers, schedules, batch, config, bundle.uses_frequency, process)
        step += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
        if log:
            log.add(step, losses)
            if step % config.checkpoint_every == 0 or step == last_step:
                _save_checkpoint(checkpoint, bundle, optimisers, schedules, step, identity)
                log.plot()
                log.show_reconstructions(step, batch, recons)
    bar.close()
    stop()  # no collective follows: the others need not wait while the main process calibrates
    if step < config.steps:
        return None
    path = out / f"{config.name}.pt"
    if not process.is_main:
        return path
    for net in bundle.networks.values():
        net.to("cpu").eval()
    calibration = calibrate if config.method == "itermask" else calibrate_one_shot
    bundle.metadata["calibration"] = calibration(bundle, calibration_cases, config.seed)
    bundle.metadata["training"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()
                                   if k not in ("output", "source")}
    bundle.metadata["training"]["calibration_data"] = [as_listed(c.image, config.source) for c in calibration_cases]
    return bundle.save(path)


def _train_step(models: dict, optimisers: dict, schedules: dict, batch: dict, config: TrainConfig,
                uses_frequency: bool, process: Process) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One optimisation step of every network on this process's share of the batch; returns each network's loss
    over the whole batch (all processes) and its reconstruction of this share."""
    batch = {k: v.to(process.device) for k, v in batch.items()}
    losses, recons = {}, {}
    for role, net in models.items():
        hidden = batch["brain"] if role == "first" else batch["hidden"]
        with torch.autocast(process.device.type, dtype=torch.bfloat16, enabled=process.mixed_precision):
            recon = net(_training_input(role, batch, hidden, uses_frequency)).float()
        squared, weight = _weighted_error(recon, batch["x"], batch["valid"], hidden, config.masked_weight,
                                          config.visible_weight)
        loss = squared / process.sum(weight).clamp_min(1.0)
        optimisers[role].zero_grad(set_to_none=True)
        # Gradients are averaged over processes; scaled so, they are those of the loss over the whole batch.
        (loss * process.world).backward()
        optimisers[role].step()
        schedules[role].step()
        losses[role] = process.sum(loss).item()
        recons[role] = recon.detach().cpu()
    return losses, recons


def _initialise_from(bundle: ModelBundle, name_or_path: str) -> None:
    """Start from a trained bundle's weights (fine-tuning); its layout and widths must be the new bundle's."""
    start_from = load_model(name_or_path)
    try:
        if set(start_from.networks) != set(bundle.networks):
            raise RuntimeError
        for role, net in bundle.networks.items():
            net.load_state_dict(start_from.networks[role].state_dict())
    except RuntimeError:
        raise ItermaskError(f"cannot start from {name_or_path}: its networks or widths differ from this model's") \
            from None


def as_listed(path: Path, manifest: str) -> str:
    """A case path as the manifest lists it (relative to the manifest), for the bundle's provenance."""
    return os.path.normpath(os.path.relpath(path, Path(manifest).parent))


def _save_checkpoint(path: Path, bundle: ModelBundle, optimisers: dict, schedules: dict, step: int,
                     run: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save({"networks": {r: n.state_dict() for r, n in bundle.networks.items()},
                "optimisers": {r: o.state_dict() for r, o in optimisers.items()},
                "schedules": {r: s.state_dict() for r, s in schedules.items()},
                "step": step, "run": run}, tmp)
    os.replace(tmp, path)


# TrainConfig fields that do not change the model a run makes: where its files go and how often it checkpoints (the
# manifest's location neither: its cases are compared through ``data``).
_NOT_DEFINING_THE_RUN = ("output", "source", "checkpoint_every", "data")
_RESTART = "run again with --restart to start over (or train into another -o folder)"


def run_identity(config: TrainConfig, train_cases: list) -> dict:
    """What defines a training run, stored in its checkpoint: the configuration and, for every training file (scan
    and masks), its resolved path, size and modification time."""
    identity = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()
                if k not in _NOT_DEFINING_THE_RUN}
    files = [f for c in train_cases for f in (c.image, c.brain_mask, c.lesion_mask) if f is not None]
    identity["data"] = [[str(Path(f).resolve()), *_size_and_mtime(f)] for f in files]
    return identity


def _size_and_mtime(path: Path) -> list[int]:
    stat = os.stat(path)
    return [stat.st_size, stat.st_mtime_ns]


def run_differences(stored: dict, current: dict) -> list[str]:
    """What differs between the run a checkpoint was made by and this one, one phrase per field."""
    out = []
    for key in sorted(set(stored) | set(current)):
        before, now = stored.get(key), current.get(key)
        if before == now:
            continue
        if key == "data":
            changed = [row[0] for row in (now or []) if row not in (before or [])]
            gone = len(before or []) - (len(now or []) - len(changed))
            example = f", e.g. {changed[0]}" if changed else ""
            out.append(f"training data ({len(changed)} file(s) new or changed, {gone} no longer used{example})")
        else:
            out.append(f"{key} {before!r} → {now!r}")
    return out


def resume_state(checkpoint: Path, identity: dict) -> dict:
    """The checkpoint's contents, if it can be read and was made by the same run (see :func:`run_identity`); an
    :class:`ItermaskError` naming the difference otherwise, since resuming would train one run's weights on
    another's settings and record false provenance."""
    try:
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
        if not isinstance(state, dict) or not {"step", "networks", "optimisers", "schedules"} <= set(state):
            raise KeyError("not a training checkpoint")
    except Exception as exc:  # truncated, corrupt or not a checkpoint: torch raises many types
        raise ItermaskError(f"{checkpoint} cannot be read ({type(exc).__name__}: truncated or corrupt?); "
                            f"{_RESTART}") from None
    if "run" not in state:  # checkpoints from before runs were recorded: their layout is still checked on loading
        tqdm.write(f"note: {checkpoint} does not record the run it belongs to; resuming it as this one")
        return state
    differences = run_differences(state["run"], identity)
    if differences:
        raise ItermaskError(f"{checkpoint} belongs to another training run ({'; '.join(differences)}); {_RESTART}")
    return state


def _load_states(checkpoint: Path, states: dict, into: dict) -> None:
    """Each role's state dict from the checkpoint into this run's network, optimiser or schedule of that role; a
    mismatch (other networks, widths or dims) becomes a one-line error."""
    try:
        for role, target in into.items():
            target.load_state_dict(states[role])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise ItermaskError(f"{checkpoint} does not fit this model ({type(exc).__name__}: other networks, widths or "
                            f"dims?); {_RESTART}") from None
