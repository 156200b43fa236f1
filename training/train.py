"""Training an IterMask² 2D model pair on healthy slices, with checkpoints, resume and a final calibration."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from itermask.bundle import ModelBundle, check_modality
from itermask.reconstruction import network_input

from .batches import training_batch
from .calibrate import calibrate
from .data import load_slices, read_cases


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in the bundle's ``training`` metadata."""

    source: str                   # CSV manifest or folder of scans (see data.read_cases)
    output: str
    name: str
    modality: str
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    channels: tuple[int, ...] = (16, 32, 64, 128)
    spacing_mm: float = 2.0
    size: int = 96
    radius: float = 12.0          # paper: 15 on 128² ≈ 1.9 mm; same physical cut-off on 96² at 2 mm
    mask_coarse_px: float = 7.5   # paper: 10 px on 128²; same physical size here
    masked_weight: float = 1.0    # loss weight of hidden voxels; visible voxels get ``visible_weight``
    visible_weight: float = 0.1
    checkpoint_every: int = 200
    seed: int = 0
    data: list = field(default_factory=list)

    def metadata(self) -> dict:
        return {
            "name": self.name, "modality": check_modality(self.modality), "dims": 2, "networks": ["first", "masked"],
            "architecture": {"name": "unet", "channels": list(self.channels)},
            "grid": {"spacing_mm": self.spacing_mm, "min_size": [1, self.size, self.size], "orientation": "RAS axial"},
            "normalisation": "iterative-zscore",
            "frequency": {"radius": self.radius, "reference_size": self.size},
            "policy": {"default": "itermask2", "first_unmask_fraction": 0.4, "min_shrink": 0.01, "max_iterations": 50,
                       "gamma": 0.05, "path_step_fraction": 0.01},
            "masks": {"patches": 1000, "sides": [4, 8, 16], "coarse_px": self.mask_coarse_px},
            "calibration": {},
        }


def _loss(recon: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, hidden: torch.Tensor,
          masked_weight: float, visible_weight: float) -> torch.Tensor:
    """Weighted mean squared error over valid (healthy brain) voxels: hidden voxels count more than visible ones."""
    weight = valid * torch.where(hidden, masked_weight, visible_weight)
    return (weight * (recon - target) ** 2).sum() / weight.sum().clamp_min(1.0)


def train(config: TrainConfig, resume: bool = True, progress: bool = True, stop_after: int | None = None) -> Path | None:
    """Train, calibrate and write ``<output>/<name>.pt``; returns its path.

    A checkpoint (``<output>/checkpoint.ckpt``) is written every ``checkpoint_every`` steps with the networks,
    optimisers and random state, so a resumed run continues exactly where the interrupted one stopped.
    ``stop_after``: train at most this many steps in this call, checkpoint and return None (time-sliced training
    on a CPU or a job queue); the next call resumes.
    """
    torch.manual_seed(config.seed)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    cases = read_cases(config.source)
    config.data = [as_listed(c.image, config.source) for c in cases if c.split == "train"]
    bundle = ModelBundle.create(config.metadata())
    divisor = bundle.networks["masked"].divisor
    train_slices = load_slices([c for c in cases if c.split == "train"], bundle.metadata["grid"], divisor)
    calibration_cases = [c for c in cases if c.split == "calibration"]
    if not calibration_cases:
        raise SystemExit("the manifest needs at least one case with split=calibration (held-out healthy data)")
    params = {role: list(net.parameters()) for role, net in bundle.networks.items()}
    optimisers = {role: torch.optim.AdamW(p, lr=config.lr, weight_decay=1e-4) for role, p in params.items()}
    schedules = {role: torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s / config.steps, 1.0))))
        for role, opt in optimisers.items()}
    gen = torch.Generator().manual_seed(config.seed)
    step = 0
    checkpoint = out / "checkpoint.ckpt"
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        for role in bundle.networks:
            bundle.networks[role].load_state_dict(state["networks"][role])
            optimisers[role].load_state_dict(state["optimisers"][role])
            schedules[role].load_state_dict(state["schedules"][role])
        gen.set_state(state["generator"])
        step = int(state["step"])
    last_step = config.steps if stop_after is None else min(config.steps, step + stop_after)
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc=f"train {config.name}", unit="step")
    for net in bundle.networks.values():
        net.train()
    while step < last_step:
        batch = training_batch(train_slices, config.batch_size, bundle.metadata, gen)
        losses = {}
        for role, net in bundle.networks.items():
            hidden = batch["brain"] if role == "first" else batch["hidden"]
            recon = net(network_input(role, batch["x"], batch["x_f"], hidden, batch["noise"]))
            loss = _loss(recon, batch["x"], batch["valid"], hidden, config.masked_weight, config.visible_weight)
            optimisers[role].zero_grad(set_to_none=True)
            loss.backward()
            optimisers[role].step()
            schedules[role].step()
            losses[role] = loss.item()
        step += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in losses.items()})
        if step % config.checkpoint_every == 0 or step == last_step:
            _save_checkpoint(checkpoint, bundle, optimisers, schedules, gen, step)
    bar.close()
    if step < config.steps:
        return None
    for net in bundle.networks.values():
        net.eval()
    bundle.metadata["calibration"] = calibrate(bundle, calibration_cases, config.seed)
    bundle.metadata["training"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()
                                   if k not in ("output", "source")}
    bundle.metadata["training"]["calibration_data"] = [as_listed(c.image, config.source) for c in calibration_cases]
    return bundle.save(out / f"{config.name}.pt")


def as_listed(path: Path, manifest: str) -> str:
    """A case path as the manifest lists it (relative to the manifest), for the bundle's provenance."""
    return os.path.normpath(os.path.relpath(path, Path(manifest).parent))


def _save_checkpoint(path: Path, bundle: ModelBundle, optimisers: dict, schedules: dict, gen: torch.Generator,
                     step: int) -> None:
    tmp = path.with_name(path.name + ".partial")
    torch.save({"networks": {r: n.state_dict() for r, n in bundle.networks.items()},
                "optimisers": {r: o.state_dict() for r, o in optimisers.items()},
                "schedules": {r: s.state_dict() for r, s in schedules.items()},
                "generator": gen.get_state(), "step": step}, tmp)
    os.replace(tmp, path)
