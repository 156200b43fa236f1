"""A training run's state — its networks, optimisers, learning-rate schedules and the step reached — and its
checkpoint, which also records the run it belongs to (the configuration and a fingerprint of the training data), so
that only the same run resumes from it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from itermask._shared import atomic_file
from itermask.bundle import ModelBundle, load_model
from itermask.cases import Case
from itermask.errors import ItermaskError

from .cache import file_fingerprint
from .config import TrainConfig

# TrainConfig fields that do not change the model a run makes: where its files go and how often it checkpoints (the
# manifest's location neither: its cases are compared through ``data``).
_NOT_DEFINING_THE_RUN = ("output", "source", "checkpoint_every", "data")
_RESTART = "run again with --restart to start over (or train into another -o folder)"
_PARTS = ("networks", "optimisers", "schedules")  # per-role state dicts in a checkpoint, beside "step" and "run"


@dataclass
class TrainState:
    """Everything a resumed run needs to continue exactly: ``bundle`` (its networks, one per role), each role's
    AdamW optimiser and learning-rate schedule, the ``step`` reached, and ``run``, the identity of the run
    (:func:`run_identity`)."""

    bundle: ModelBundle
    optimisers: dict[str, torch.optim.Optimizer]
    schedules: dict[str, torch.optim.lr_scheduler.LambdaLR]
    run: dict
    step: int = 0

    @classmethod
    def create(cls, config: TrainConfig, run: dict, device: torch.device) -> "TrainState":
        """Fresh networks (drawn from torch's global random state) on ``device``, AdamW and a cosine schedule that
        decays the learning rate to 1 % of ``config.lr`` over ``config.steps``."""
        bundle = ModelBundle.create(config.metadata()).to(device)
        optimisers = {role: torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
                      for role, net in bundle.networks.items()}
        schedules = {role: torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(s / config.steps, 1.0))))
            for role, opt in optimisers.items()}
        return cls(bundle, optimisers, schedules, run)

    @property
    def networks(self) -> dict[str, torch.nn.Module]:
        """The bundle's networks, by role."""
        return self.bundle.networks

    def save(self, path: Path) -> None:
        """The checkpoint, written atomically: a run killed while writing keeps the previous one."""
        parts = {name: {role: obj.state_dict() for role, obj in getattr(self, name).items()} for name in _PARTS}
        with atomic_file(path) as handle:
            torch.save({**parts, "step": self.step, "run": self.run}, handle)

    def load(self, path: Path) -> None:
        """Continue from the checkpoint at ``path`` if it was made by this run (see :func:`stored_state`)."""
        stored = stored_state(path, self.run)
        try:
            for name in _PARTS:
                for role, target in getattr(self, name).items():
                    target.load_state_dict(stored[name][role])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise ItermaskError(f"{path} does not fit this model ({type(exc).__name__}: other networks, widths or "
                                f"dims?); {_RESTART}") from None
        self.step = int(stored["step"])

    def start_from(self, name_or_path: str) -> None:
        """Start from a trained bundle's weights (fine-tuning); its layout and widths must be this one's."""
        start_from = load_model(name_or_path)
        try:
            if set(start_from.networks) != set(self.networks):
                raise RuntimeError
            for role, net in self.bundle.networks.items():
                net.load_state_dict(start_from.networks[role].state_dict())
        except RuntimeError:
            raise ItermaskError(f"cannot start from {name_or_path}: its networks or widths differ from this "
                                "model's") from None


def run_identity(config: TrainConfig, train_cases: list[Case]) -> dict:
    """What defines a training run, stored in its checkpoint: the configuration and, for every training file (scan
    and masks), its resolved path, size and modification time."""
    identity = config.as_json(leave_out=_NOT_DEFINING_THE_RUN)
    files = [f for c in train_cases for f in (c.image, c.brain_mask, c.lesion_mask) if f is not None]
    identity["data"] = [file_fingerprint(f) for f in files]
    return identity


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


def stored_state(checkpoint: Path, identity: dict) -> dict:
    """The checkpoint's contents, if it can be read and was made by the same run (see :func:`run_identity`); an
    :class:`ItermaskError` naming the difference otherwise, since resuming would train one run's weights on
    another's settings and record false provenance."""
    try:
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
        if not isinstance(state, dict) or not {"step", *_PARTS} <= set(state):
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
