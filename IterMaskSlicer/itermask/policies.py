"""How the mask changes from one iteration to the next, and when to stop (METHOD.md's two policies).

A policy is stateless: it reads a :class:`RunState` — the iterations up to the current one, the brain, τ and the
bundle's calibration — so going back, seeking and branching need no bookkeeping here.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Protocol

import torch

from .metadata import Calibration, PolicySettings
from .thresholding import StopThreshold, checked_stop, stop_threshold


class Phase(str, Enum):
    """The part of a run an iteration belongs to (its value is the name reports and the Slicer module show)."""

    FIRST = "first"    # IterMask²: the whole brain hidden, reconstructed from x_f alone
    SHRINK = "shrink"  # IterMask²: m ∧ (e > τ)
    PATH = "path"      # IterMask3D: 1 % of the brain unmasked per step, recording τ(t)
    FINAL = "final"    # IterMask3D: from the whole brain again, at τ_stop
    EDITED = "edited"  # a mask a person set

    def __str__(self) -> str:
        return self.value


class RunState(Protocol):
    """What a policy may read of a run (a :class:`~itermask.session.Session` is one).

    ``history``: the iterations up to the current one, oldest first (each with ``mask``, ``error``, ``tau``,
    ``phase``; tensors (z, y, x) on the model grid); ``brain``: (z, y, x) bool; ``tau``: the shrink threshold in
    force; ``calibration``: the bundle's (τ, threshold, healthy scans).
    """

    history: list
    brain: torch.Tensor
    brain_voxels: int
    tau: float
    calibration: Calibration


@dataclass
class Proposal:
    """The next step: hide ``mask``; ``tau`` produced it (None when no threshold did); ``phase`` names the part of
    the run; ``restart`` means the whole brain is hidden again (the first-iteration reconstruction);
    ``tau_stop``: a subject-specific τ found just now, for the session to use from here on."""

    mask: torch.Tensor
    tau: float | None
    phase: Phase
    restart: bool = False
    tau_stop: float | None = None


@dataclass(frozen=True)
class PolicyReport:
    """What a policy says about a run so far: ``name``; ``tau`` in force; for IterMask3D the shrink path's
    ``tau_path`` (τ(0), τ(1), …), and once it is complete ``tau_stop`` and the ``stop`` that found it."""

    name: str
    tau: float
    tau_path: tuple[float, ...] = field(default=())
    tau_stop: float | None = None
    stop: StopThreshold | None = None

    def as_dict(self) -> dict:
        """Plain JSON-ready values (``stop`` as :meth:`StopThreshold.as_dict`)."""
        return dict(asdict(self), tau_path=list(self.tau_path), stop=self.stop.as_dict() if self.stop else None)


def _current(state: RunState):
    return state.history[-1] if state.history else None


def _shrink(state: RunState, tau: float) -> torch.Tensor:
    it = _current(state)
    return it.mask & (it.error > tau)


def _size_changed_less_than(state: RunState, proposal: Proposal, fraction: float) -> bool:
    """The mask's size changes by less than ``fraction`` of it (growth counts as change too)."""
    current = int(_current(state).mask.sum())
    return abs(current - int(proposal.mask.sum())) < fraction * max(current, 1)


class FixedTau:
    """IterMask²: whole brain hidden, then 40 % unmasked, then ``m ∧ (e > τ)`` with τ from calibration; stop when
    the mask shrinks by less than 1 % of its size, is empty, or the iteration cap is reached."""

    name = "itermask2"
    threshold_source = "calibrated on healthy scans (the bundle's)"

    def __init__(self, settings: PolicySettings):
        self.settings = settings

    def propose(self, state: RunState) -> Proposal:
        it = _current(state)
        if it is None:
            return Proposal(state.brain.clone(), None, Phase.FIRST, restart=True)
        if it.phase == Phase.FIRST:
            # Only after the first reconstruction: unmask the given fraction of brain voxels with the lowest error.
            tau = float(torch.quantile(it.error[state.brain], self.settings.first_unmask_fraction))
            return Proposal(_shrink(state, tau), tau, Phase.SHRINK)
        return Proposal(_shrink(state, state.tau), state.tau, Phase.SHRINK)

    def converged(self, state: RunState, proposal: Proposal) -> bool:
        if _current(state).phase == Phase.FIRST:
            return not proposal.mask.any()
        return _size_changed_less_than(state, proposal, self.settings.min_shrink)

    def default_threshold(self, state: RunState) -> float:
        """The segmentation threshold calibrated on healthy scans."""
        return float(state.calibration.threshold)

    def describe(self, state: RunState) -> PolicyReport:
        return PolicyReport(self.name, state.tau)


class SubjectSpecific:
    """IterMask3D: a *path* that unmasks 1 % of the brain per step and records the τ(t) that does it, a fit of
    ``a·tan(b·t)`` giving τ_stop, then a *final* run from the whole brain with ``m = b ∧ (e > τ_stop)`` (so the
    mask can grow back) until its size changes by less than 1 % (voxels that trade places under fresh noise do not
    count: a symmetric difference stays near 1–2 % for ever). The anomaly map is segmented at τ_stop too.

    The path runs until the mask is empty: the tangent is fitted to the whole path, so stopping it early changes
    τ_stop (measured with a small model on the MS scan: cutting the path 10 or 20 steps after t* moved τ_stop by
    −12 % and +10 %).
    """

    name = "itermask3d"
    threshold_source = "τ_stop of this scan's shrink path"

    def __init__(self, settings: PolicySettings):
        self.settings = settings
        self.step_fraction = settings.path_step_fraction
        self.gamma = settings.gamma

    def path_taus(self, state: RunState) -> tuple[float, ...]:
        """τ(0), τ(1), … of the path so far (τ(t) is the threshold that produced the mask of path step t+1)."""
        return tuple(it.tau for it in state.history if it.phase == Phase.PATH and it.tau is not None)

    def stop(self, state: RunState) -> StopThreshold | None:
        """τ_stop once the path is complete, else None; an absurd one is replaced (see :func:`checked_stop`)."""
        taus = self.path_taus(state)
        if len(taus) < 3 or not self._path_done(state):
            return None
        healthy = tuple(scan.tau_stop for scan in state.calibration.healthy(self.name) if scan.tau_stop is not None)
        return _checked_stop(taus, self.gamma, healthy, state.calibration.tau)

    def _path_done(self, state: RunState) -> bool:
        it = _current(state)
        if it.phase != Phase.PATH:
            return True
        return int(it.mask.sum()) <= self._step_voxels(state)

    def _step_voxels(self, state: RunState) -> int:
        return max(1, math.ceil(self.step_fraction * state.brain_voxels))

    def propose(self, state: RunState) -> Proposal:
        it = _current(state)
        if it is None:
            return Proposal(state.brain.clone(), None, Phase.PATH, restart=True)
        if it.phase == Phase.PATH:
            stop = self.stop(state)
            if stop is None:
                return self._path_step(state)
            return Proposal(state.brain.clone(), None, Phase.FINAL, restart=True, tau_stop=stop.tau_stop)
        # Final run: the error over the whole brain decides, so a voxel may return to the mask.
        return Proposal(state.brain & (it.error > state.tau), state.tau, Phase.FINAL)

    def _path_step(self, state: RunState) -> Proposal:
        it = _current(state)
        hidden_errors = it.error[it.mask]
        k = min(self._step_voxels(state), hidden_errors.numel())
        lowest = torch.topk(hidden_errors, k, largest=False, sorted=False)   # exactly k voxels, even among ties
        tau = float(lowest.values.max())
        keep = torch.ones_like(hidden_errors, dtype=torch.bool)
        keep[lowest.indices] = False
        mask = torch.zeros_like(it.mask)
        mask[it.mask] = keep
        return Proposal(mask, tau, Phase.PATH)

    def default_threshold(self, state: RunState) -> float:
        """τ in force for the final run (τ_stop unless a person changed it): the paper's point is a threshold from the
        subject itself, with no healthy validation data; before the path is done, the calibrated one."""
        if not state.history or self.stop(state) is None:
            return float(state.calibration.threshold)
        return float(state.tau)

    def converged(self, state: RunState, proposal: Proposal) -> bool:
        if _current(state).phase != Phase.FINAL or proposal.restart:
            return False
        return _size_changed_less_than(state, proposal, self.settings.min_shrink)

    def describe(self, state: RunState) -> PolicyReport:
        stop = self.stop(state) if state.history else None
        return PolicyReport(self.name, state.tau, self.path_taus(state), state.tau if stop else None, stop)


@functools.lru_cache(maxsize=16)
def _checked_stop(taus: tuple[float, ...], gamma: float, healthy: tuple[float, ...], calibrated_tau: float):
    """τ_stop of a finished path, fitted once: results, reports and thresholds all ask for it."""
    return checked_stop(stop_threshold(taus, gamma), list(healthy), calibrated_tau)


POLICIES = {p.name: p for p in (FixedTau, SubjectSpecific)}
