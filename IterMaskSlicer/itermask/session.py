"""An interactive IterMask run on one volume: step, go back, seek, change τ, edit the mask, run to convergence.

Every iteration is kept, so scrubbing and re-thresholding never call the model again. Noise is drawn from
``(seed, iteration index)``, so the same seed gives the same answer, also after going back and stepping again.
"""
from __future__ import annotations

import operator
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from ._shared import choose_device, voxel_ml, voxel_spacing
from .bundle import ModelBundle
from .errors import ItermaskError, finite_number, positive_number
from .metadata import Calibration, HealthyScan
from .policies import POLICIES, Phase, PolicyReport, Proposal
from .preprocess import PreparedVolume, prepare_volume
from .reconstruction import MAX_SEED, VolumeReconstructor, iteration_noise
from .normalize import iterative_zscore
from .rules import SegmentationRule, hyperintense_voxels, only_hyperintense, reconstruction_error
from .thresholding import StopThreshold

# A segmentation larger than this share of the brain is reported as a warning: no lesion a user would segment this
# way is that large, a wrong modality or a broken scan is.
LARGE_SEGMENTATION_FRACTION = 0.25


@dataclass
class Iteration:
    """One reconstruction. All tensors (z, y, x) on the model grid.

    ``mask``: voxels hidden from the model (True); ``error``: ``(x' − x)²`` inside the brain, zero outside;
    ``tau``: the threshold that produced ``mask`` from the previous iteration (None for a whole-brain mask and for
    a mask a person set); ``phase``: see :class:`~itermask.policies.Phase`; ``seconds``: wall time of the
    reconstruction.
    """

    index: int
    mask: torch.Tensor
    reconstruction: torch.Tensor
    error: torch.Tensor
    tau: float | None
    phase: Phase
    seconds: float

    def summary(self, brain_voxels: int) -> "IterationSummary":
        voxels = int(self.mask.sum())
        return IterationSummary(self.index, self.phase, self.tau, voxels, voxels / brain_voxels, round(self.seconds, 3))


@dataclass(frozen=True)
class IterationSummary:
    """An iteration in numbers: ``mask_voxels`` on the model grid, ``mask_fraction`` of the brain, ``seconds``."""

    index: int
    phase: Phase
    tau: float | None
    mask_voxels: int
    mask_fraction: float
    seconds: float

    def as_dict(self) -> dict:
        return dict(asdict(self), phase=self.phase.value)


@dataclass
class Result:
    """The outcome on the *input* grid: ``anomaly_map`` float32, ``mask`` uint8 0/1, and the record behind them.
    ``policy``: the policy's report (τ, the shrink path and τ_stop); ``rule``: which map was thresholded and where
    the threshold came from; ``warnings``: one sentence each, for anything a reader of the result should check (a
    replaced τ_stop, a segmentation of a large part of the brain)."""

    anomaly_map: np.ndarray
    mask: np.ndarray
    threshold: float
    iterations: list[IterationSummary]
    converged: bool
    scan_score: dict
    policy: PolicyReport
    rule: SegmentationRule
    warnings: list[str] = field(default_factory=list)


def check_seed(seed) -> int:
    """``seed`` as an int in 0 … :data:`~itermask.reconstruction.MAX_SEED` (the noise generators' range)."""
    try:
        value = operator.index(seed)  # ints and numpy integers; not 1.5, "3" or True
    except TypeError:
        raise ItermaskError(f"the seed must be a whole number, got {seed!r}") from None
    if isinstance(seed, bool) or not 0 <= value <= MAX_SEED:
        raise ItermaskError(f"the seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return value


def healthy_percentiles(score: dict, healthy: tuple[HealthyScan, ...]) -> dict:
    """Where a scan's ``final_mask_ml`` and ``mean_error`` fall among healthy calibration scans: the percentage of
    them scoring at most as much (100 = beyond every healthy scan: an artifact or a lesion), and how many there were.

    >>> healthy = (HealthyScan(final_mask_ml=2.0, mean_error=0.3),)
    >>> healthy_percentiles({"final_mask_ml": 5.0, "mean_error": 0.1}, healthy)
    {'final_mask_ml': 100.0, 'mean_error': 0.0, 'healthy_scans': 1}
    """
    out = {key: (100.0 * sum(getattr(h, key) <= score[key] for h in healthy) / len(healthy) if healthy else None)
           for key in ("final_mask_ml", "mean_error")}
    return dict(out, healthy_scans=len(healthy))


class Session:
    """IterMask on one scan.

    Args:
        model: a loaded :class:`ModelBundle`.
        image: (i, j, k) scan; ``affine``: its voxel → RAS mm matrix (identity if None).
        brain_mask: same shape, non-zero in the brain; None for the non-zero region of a skull-stripped image.
        policy: ``"itermask2"`` (fixed τ from calibration) or ``"itermask3d"`` (subject-specific τ_stop from the
            shrink path; see :mod:`itermask.policies`); None: the bundle's default.
        tau: shrink threshold (default: the bundle's calibrated τ, or τ_stop once the path has found it);
            ``threshold``: segmentation threshold on the anomaly map (default: the bundle's chosen rule for this
            policy, see :mod:`itermask.rules`, else the policy's own — the calibrated one for IterMask², the
            subject's τ_stop for IterMask3D). Both in squared normalised-intensity units.
        anomaly: the map to segment, one of :data:`itermask.rules.ANOMALY_MAPS` (default: the bundle's rule's).

    Example::

        session = Session(load_model("flair-2d"), image, affine, brain)
        session.step(); session.step(); session.back()
        session.set_tau(session.tau * 1.5)          # the human-AI protocol: raise τ, step again
        result = session.run()
    """

    def __init__(self, model: ModelBundle, image: np.ndarray, affine: np.ndarray | None = None,
                 brain_mask: np.ndarray | None = None, policy: str | None = None, seed: int = 0,
                 device: str = "auto", tau: float | None = None, threshold: float | None = None,
                 anomaly: str | None = None):
        if model.method != "itermask":
            raise ItermaskError(f"{model.name} is an {model.method.upper()} baseline for evaluation, not an IterMask "
                                "model")
        policy = policy or model.metadata.policy.default
        if policy not in POLICIES:
            raise ItermaskError(f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
        self.model, self.seed = model, check_seed(seed)
        self.settings = model.metadata.policy
        self.policy = POLICIES[policy](self.settings)
        self.rule = SegmentationRule.for_bundle(model.metadata, policy)
        if anomaly is not None:
            self.rule = SegmentationRule(anomaly, self.rule.threshold, self.rule.source)
        self.tau_from_user = None if tau is None else positive_number(tau, "τ")
        self.tau = finite_number(model.calibration.tau if tau is None else tau, "τ")
        self.threshold_from_user = None if threshold is None else finite_number(threshold, "the threshold")
        self.device = choose_device(device)
        self.prepared: PreparedVolume = prepare_volume(image, affine, brain_mask, model.metadata.grid,
                                                       model.grid_divisor)
        # The ``hyperintense`` map needs the scan's own hyper-intense voxels on the input grid (kept: 1 byte a voxel).
        self._hyperintense = self._hyperintense_voxels(image) if self.rule.anomaly == "hyperintense" else None
        model.to(self.device)
        self._reconstruct = VolumeReconstructor(model, self.prepared.image, self.prepared.brain, self.device)
        self.brain_voxels = int(self.prepared.brain.sum())
        self.iterations: list[Iteration] = []
        self.position = -1
        self._pending_mask: torch.Tensor | None = None
        self._proposal: tuple[tuple, Proposal] | None = None

    @property
    def threshold(self) -> float:
        """The segmentation threshold: a person's choice if made, else the bundle's rule's, else the policy's."""
        if self.threshold_from_user is not None:
            return self.threshold_from_user
        if self.rule.threshold is not None:
            return self.rule.threshold
        return self.policy.default_threshold(self)

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.threshold_from_user = finite_number(value, "the threshold")

    # --- what a policy reads (see :class:`~itermask.policies.RunState`) ----------------------------------------
    @property
    def history(self) -> list[Iteration]:
        """The iterations up to the current one, oldest first."""
        return self.iterations[: self.position + 1]

    @property
    def brain(self) -> torch.Tensor:
        return self.prepared.brain

    @property
    def calibration(self) -> Calibration:
        return self.model.calibration

    # --- navigation -------------------------------------------------------------------------------------------
    @property
    def current(self) -> Iteration | None:
        return self.iterations[self.position] if self.position >= 0 else None

    def back(self) -> Iteration | None:
        """Show the previous iteration (cached; nothing is recomputed)."""
        self.position = max(self.position - 1, 0 if self.iterations else -1)
        return self.current

    def seek(self, index: int) -> Iteration:
        """Show iteration ``index`` of those computed so far (cached). A bad index changes nothing."""
        try:
            index = operator.index(index)
        except TypeError:
            raise ItermaskError(f"iteration number must be a whole number, got {index!r}") from None
        if not 0 <= index < len(self.iterations):
            raise ItermaskError(f"iteration {index} has not been computed (0..{len(self.iterations) - 1})")
        self.position = index
        return self.current

    def reset(self) -> None:
        """Forget every iteration and edit; τ and the threshold stay as set."""
        self.iterations, self.position, self._pending_mask = [], -1, None

    # --- changing the course ----------------------------------------------------------------------------------
    def set_tau(self, tau: float) -> None:
        """Use ``tau`` for the next steps; iterations after the current one are discarded (they used the old τ)."""
        self.tau = self.tau_from_user = positive_number(tau, "τ")
        self._truncate()

    def set_mask(self, mask: np.ndarray) -> None:
        """Continue from an edited mask on the *input* grid (non-zero = still suspicious); the next step uses it."""
        self._pending_mask = self.prepared.mask_from_input(mask)
        self._truncate()

    def _truncate(self) -> None:
        del self.iterations[self.position + 1:]

    # --- iterating --------------------------------------------------------------------------------------------
    def propose(self) -> Proposal:
        """What the next step would hide (an edited mask if one is pending, else the policy's choice); computed
        once per state, since :attr:`converged` and :meth:`step` both ask for it."""
        # A proposal depends on the iterations up to the current one (which change only with it), an edit and τ.
        state = (self.current, self._pending_mask, self.tau)
        if self._proposal is None or any(a is not b for a, b in zip(self._proposal[0], state)):
            proposal = (Proposal(self._pending_mask, None, Phase.EDITED) if self._pending_mask is not None
                        else self.policy.propose(self))
            self._proposal = (state, proposal)
        return self._proposal[1]

    @property
    def converged(self) -> bool:
        """True when the policy says the mask has settled, the mask is empty, or the iteration cap is reached."""
        it = self.current
        if it is None:
            return False
        # The cap bounds the refinement; an IterMask3D path is bounded by its own 1 %-per-step schedule.
        refining = sum(1 for i in self.history if i.phase != Phase.PATH)
        if refining >= self.settings.max_iterations or not it.mask.any():
            return True
        proposal = self.propose()
        return not proposal.mask.any() or (self._pending_mask is None and self.policy.converged(self, proposal))

    def step(self) -> Iteration:
        """Advance one iteration: the cached one if it exists, else reconstruct under the next mask."""
        if self.position + 1 < len(self.iterations):
            self.position += 1
            return self.current
        proposal = self.propose()
        if proposal.tau_stop is not None and self.tau_from_user is None:
            self.tau = proposal.tau_stop  # a τ the person chose always wins over the subject-specific one
        index = self.position + 1
        noise = iteration_noise(self.prepared.image.shape, self.seed, index)
        start = time.perf_counter()
        recon = self._reconstruct(proposal.mask, noise, first=proposal.restart)
        if not torch.isfinite(recon).all():
            raise ItermaskError(f"{self.model.name} reconstructed non-finite values (a broken model file?)")
        error = reconstruction_error(self.prepared.image, recon, self.prepared.brain)
        self.iterations.append(Iteration(index, proposal.mask, recon, error, proposal.tau, proposal.phase,
                                         time.perf_counter() - start))
        self._pending_mask = None
        self.position = index
        return self.current

    def run(self, callback=None) -> Result:
        """Step until converged (see :attr:`converged`); ``callback(iteration)`` after each new step."""
        while not self.converged:
            it = self.step()
            if callback is not None:
                callback(it)
        return self.result()

    # --- results ----------------------------------------------------------------------------------------------
    def model_grid_anomaly_map(self) -> torch.Tensor:
        """The current iteration's anomaly map (the rule's, see :mod:`itermask.rules`), (z, y, x) on the model grid."""
        if self.current is None:
            raise ItermaskError("no iteration has been run yet")
        if self.rule.anomaly == "squared":
            return self.current.error
        return reconstruction_error(self.prepared.image, self.current.reconstruction, self.prepared.brain,
                                    side=self.rule.side)

    def anomaly_map(self) -> np.ndarray:
        """:meth:`model_grid_anomaly_map` on the input grid (float32): for ``hyperintense`` only where the scan is
        (:func:`itermask.rules.only_hyperintense`); zero outside :meth:`input_support`."""
        sampled = self.prepared.map_to_input(self.model_grid_anomaly_map())
        return sampled if self._hyperintense is None else only_hyperintense(sampled, self._hyperintense)

    def input_support(self) -> np.ndarray:
        """(i, j, k) bool: the input voxels where :meth:`anomaly_map` can be nonzero: the brain, or for
        ``hyperintense`` its hyper-intense voxels. The model-grid map sampled there alone, zero elsewhere, is the
        whole map (the Slicer worker samples only those, a few per cent of the brain for ``hyperintense``)."""
        brain = self.prepared.input_brain
        return brain if self._hyperintense is None else brain & self._hyperintense

    def _hyperintense_voxels(self, image: np.ndarray) -> np.ndarray:
        if self.model.calibration.intensity_threshold is None:
            raise ItermaskError(f"{self.model.name} has no healthy-calibrated intensity threshold, which the "
                                "hyperintense map needs")
        z = iterative_zscore(torch.from_numpy(np.asarray(image, np.float32)),
                             torch.from_numpy(self.prepared.input_brain))
        return hyperintense_voxels(z.numpy(), self.model.calibration.intensity_threshold)

    def result(self, threshold: float | None = None) -> Result:
        """Anomaly map and segmentation of the current iteration, on the input grid."""
        threshold = self.threshold if threshold is None else finite_number(threshold, "the threshold")
        amap = self.anomaly_map()
        mask = self.rule.post.segment(amap, threshold, self.prepared.input_brain,
                                      voxel_spacing(self.prepared.input_affine)).astype(np.uint8)
        input_voxel_ml = voxel_ml(self.prepared.input_affine)
        # On the model grid, as the healthy reference was measured, so the two compare whatever the input's voxels.
        final_mask_ml = float(self.current.mask.sum()) * self.prepared.grid.spacing ** 3 / 1000.0
        score = {"final_mask_ml": final_mask_ml, "segmentation_ml": float(mask.sum() * input_voxel_ml),
                 "mean_error": float(self.current.error[self.prepared.brain].mean())}
        score["healthy_percentile"] = healthy_percentiles(score, self.model.calibration.healthy(self.policy.name))
        policy = self.policy.describe(self)
        source = ("set by the user" if self.threshold_from_user is not None
                  else self.rule.source if self.rule.threshold is not None else self.policy.threshold_source)
        brain_ml = float(self.prepared.input_brain.sum() * input_voxel_ml)
        return Result(amap, mask, threshold, [it.summary(self.brain_voxels) for it in self.history],
                      self.converged, score, policy, replace(self.rule, threshold=threshold, source=source),
                      _warnings(policy.stop, score["segmentation_ml"], brain_ml, self.model.modality))


def _warnings(stop: StopThreshold | None, segmentation_ml: float, brain_ml: float, modality: str) -> list[str]:
    """What a reader of a result must check: a τ_stop that was replaced or not fitted, a huge segmentation."""
    out = []
    if stop and stop.fallback:
        out.append(f"{stop.fallback}: segmented at {stop.tau_stop:.4g} instead (see policy_details.stop)")
    elif stop and stop.method != "tan-fit":
        out.append(f"the a·tan(b·t) fit of the shrink path was poor (R² {stop.fit.r2:.2f}): τ_stop "
                   "comes from the smoothed path instead")
    if brain_ml > 0 and segmentation_ml > LARGE_SEGMENTATION_FRACTION * brain_ml:
        out.append(f"the segmentation covers {100 * segmentation_ml / brain_ml:.0f} % of the brain "
                   f"({segmentation_ml:.0f} ml): check that the scan is a {modality} scan and the brain mask fits it")
    return out
