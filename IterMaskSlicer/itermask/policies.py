"""How the mask changes from one iteration to the next, and when to stop (METHOD.md's two policies).

A policy is stateless: it reads the session's iterations up to the current one, so going back, seeking and
branching need no bookkeeping here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .thresholding import StopThreshold, checked_stop, stop_threshold


@dataclass
class Proposal:
    """The next step: hide ``mask``; ``tau`` produced it (None when no threshold did); ``phase`` names the part of
    the run; ``restart`` means the whole brain is hidden again (the first-iteration reconstruction);
    ``tau_stop``: a subject-specific τ found just now, for the session to use from here on."""

    mask: torch.Tensor
    tau: float | None
    phase: str
    restart: bool = False
    tau_stop: float | None = None


def _shrink(session, tau: float) -> torch.Tensor:
    it = session.current
    return it.mask & (it.error > tau)


def _size_changed_less_than(session, proposal: Proposal, fraction: float) -> bool:
    """The mask's size changes by less than ``fraction`` of it (growth counts as change too)."""
    current = int(session.current.mask.sum())
    return abs(current - int(proposal.mask.sum())) < fraction * max(current, 1)


class FixedTau:
    """IterMask²: whole brain hidden, then 40 % unmasked, then ``m ∧ (e > τ)`` with τ from calibration; stop when
    the mask shrinks by less than 1 % of its size, is empty, or the iteration cap is reached."""

    name = "itermask2"
    threshold_source = "calibrated on healthy scans (the bundle's)"

    def __init__(self, settings: dict):
        self.settings = settings

    def propose(self, session) -> Proposal:
        it = session.current
        if it is None:
            return Proposal(session.prepared.brain.clone(), None, "first", restart=True)
        if it.phase == "first":
            # Only after the first reconstruction: unmask the given fraction of brain voxels with the lowest error.
            tau = float(torch.quantile(it.error[session.prepared.brain], self.settings["first_unmask_fraction"]))
            return Proposal(_shrink(session, tau), tau, "shrink")
        return Proposal(_shrink(session, session.tau), session.tau, "shrink")

    def converged(self, session, proposal: Proposal) -> bool:
        it = session.current
        if it.phase == "first":
            return not proposal.mask.any()
        return _size_changed_less_than(session, proposal, self.settings["min_shrink"])

    def default_threshold(self, session) -> float:
        """The segmentation threshold calibrated on healthy scans."""
        return float(session.model.calibration["threshold"])

    def describe(self, session) -> dict:
        return {"tau": session.tau}


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

    def __init__(self, settings: dict):
        self.settings = settings
        self.step_fraction = settings.get("path_step_fraction", 0.01)
        self.gamma = settings.get("gamma", 0.05)

    def path_taus(self, session) -> list[float]:
        """τ(0), τ(1), … of the path so far (τ(t) is the threshold that produced the mask of path step t+1)."""
        return [it.tau for it in session.iterations[: session.position + 1] if it.phase == "path" and it.tau is not None]

    def stop(self, session) -> StopThreshold | None:
        """τ_stop once the path is complete, else None; an absurd one is replaced (see :func:`checked_stop`)."""
        taus = self.path_taus(session)
        if len(taus) < 3 or not self._path_done(session):
            return None
        calibration = session.model.calibration
        healthy = [scan["tau_stop"] for scan in calibration.get("healthy_scans", {}).get(self.name, [])
                   if "tau_stop" in scan]
        return checked_stop(stop_threshold(taus, self.gamma), healthy, calibration["tau"])

    def _path_done(self, session) -> bool:
        it = session.current
        if it.phase != "path":
            return True
        return int(it.mask.sum()) <= self._step_voxels(session)

    def _step_voxels(self, session) -> int:
        return max(1, math.ceil(self.step_fraction * session.brain_voxels))

    def propose(self, session) -> Proposal:
        it = session.current
        if it is None:
            return Proposal(session.prepared.brain.clone(), None, "path", restart=True)
        if it.phase == "path":
            stop = self.stop(session)
            if stop is None:
                return self._path_step(session)
            return Proposal(session.prepared.brain.clone(), None, "final", restart=True, tau_stop=stop.tau_stop)
        # Final run: the error over the whole brain decides, so a voxel may return to the mask.
        return Proposal(session.prepared.brain & (it.error > session.tau), session.tau, "final")

    def _path_step(self, session) -> Proposal:
        it = session.current
        hidden_errors = it.error[it.mask]
        k = self._step_voxels(session)
        tau = float(torch.kthvalue(hidden_errors, min(k, hidden_errors.numel())).values)
        order = torch.argsort(hidden_errors)[:k]   # exactly k voxels, even among ties
        keep = torch.ones_like(hidden_errors, dtype=torch.bool)
        keep[order] = False
        mask = torch.zeros_like(it.mask)
        mask[it.mask] = keep
        return Proposal(mask, tau, "path")

    def default_threshold(self, session) -> float:
        """τ in force for the final run (τ_stop unless a person changed it): the paper's point is a threshold from the
        subject itself, with no healthy validation data; before the path is done, the calibrated one."""
        if session.current is None or self.stop(session) is None:
            return float(session.model.calibration["threshold"])
        return float(session.tau)

    def converged(self, session, proposal: Proposal) -> bool:
        it = session.current
        if it.phase != "final" or proposal.restart:
            return False
        return _size_changed_less_than(session, proposal, self.settings["min_shrink"])

    def describe(self, session) -> dict:
        stop = self.stop(session) if session.current is not None else None
        return {"tau_path": self.path_taus(session), "tau_stop": session.tau if stop else None,
                "stop": stop.as_dict() if stop else None}


POLICIES = {p.name: p for p in (FixedTau, SubjectSpecific)}
