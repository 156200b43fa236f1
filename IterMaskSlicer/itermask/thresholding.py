"""Thresholds: the subject-specific τ_stop of a shrink path, the check of it against the healthy calibration scans,
and the mask a threshold gives. (The healthy calibration runs that set a bundle's thresholds are
:mod:`itermask.calibration`'s; τ itself is calibrated with the training masks, in ``itermask_training``.)

Subject-specific τ (IterMask3D §3.4): fit ``τ(t) = a·tan(b·t)`` to a shrink path and find where it turns steep.
Pure numpy: a few hundred numbers need no optimiser library. For a fixed ``b`` the best ``a`` is linear least
squares, so the fit is a 1D search over ``b`` in (0, π/(2·t_max)), where the tangent stays finite on the data.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np

MIN_R2 = 0.85          # below this (on the first 80 points) the tangent model is not trusted
FIT_POINTS = 80
# A τ_stop more than this factor away from every healthy calibration scan's is a broken path, not a subject.
HEALTHY_RANGE_FACTOR = 4.0


@dataclass(frozen=True)
class TanFit:
    """``τ(t) = a·tan(b·t)`` and its coefficient of determination ``r2`` on the points it was fitted to."""

    a: float
    b: float
    r2: float

    def __call__(self, t):
        return self.a * np.tan(self.b * np.asarray(t, dtype=float))

    def derivative(self, t):
        """``τ'(t) = a·b / cos²(b·t)``."""
        return self.a * self.b / np.cos(self.b * np.asarray(t, dtype=float)) ** 2


def fit_tan(t: np.ndarray, tau: np.ndarray) -> TanFit:
    """Least-squares ``a, b`` for ``τ ≈ a·tan(b·t)``.

    >>> t = np.arange(60.0); fit = fit_tan(t, 0.3 * np.tan(0.02 * t))
    >>> round(fit.a, 3), round(fit.b, 4)
    (0.3, 0.02)
    """
    t, tau = np.asarray(t, float), np.asarray(tau, float)
    limit = np.pi / 2 / max(t.max(), 1e-9)

    def best_a_and_sse(b: float) -> tuple[float, float]:
        g = np.tan(b * t)
        a = float(g @ tau / max(g @ g, 1e-300))
        return a, float(((a * g - tau) ** 2).sum())

    # Coarse grid (dense near the pole, where the curve is most sensitive), then golden-section refinement.
    grid = limit * (1 - np.geomspace(1, 1e-4, 400))[1:]
    sse = [best_a_and_sse(b)[1] for b in grid]
    i = int(np.argmin(sse))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if best_a_and_sse(m1)[1] < best_a_and_sse(m2)[1]:
            hi = m2
        else:
            lo = m1
    b = (lo + hi) / 2
    a, residual = best_a_and_sse(b)
    total = float(((tau - tau.mean()) ** 2).sum())
    return TanFit(a, float(b), 1.0 - residual / total if total > 0 else 0.0)


def smoothed_derivative(tau: np.ndarray, window: int = 5) -> np.ndarray:
    """Finite-difference ``τ'`` after a centred moving average (the fallback when the tangent fit is poor)."""
    tau = np.asarray(tau, float)
    if len(tau) < 2:
        return np.zeros_like(tau)
    kernel = np.ones(min(window, len(tau))) / min(window, len(tau))
    padded = np.pad(tau, (len(kernel) // 2, len(kernel) - 1 - len(kernel) // 2), mode="edge")
    return np.gradient(np.convolve(padded, kernel, mode="valid"))


@dataclass(frozen=True)
class StopThreshold:
    """Where the shrink path turns steep: ``tau_stop`` at step ``t_star``, found by ``method`` (``tan-fit`` or
    ``finite-difference``); ``fit`` is the tangent fit (reported even when it was not trusted). ``fallback``: why
    the path's own τ_stop (``found``) was not used, when it was not (see :func:`checked_stop`)."""

    tau_stop: float
    t_star: int
    method: str
    gamma: float
    fit: TanFit
    fallback: str | None = None
    found: float | None = None

    def as_dict(self) -> dict:
        out = asdict(self)
        out["fit"] = asdict(self.fit)
        return out


def stop_threshold(tau: np.ndarray, gamma: float) -> StopThreshold:
    """τ_stop for a shrink path ``tau[t]`` (t = 0, 1, …): the first t with ``τ'(t) > γ``.

    >>> t = np.arange(100.0); path = 0.05 * np.tan(0.015 * t)
    >>> s = stop_threshold(path, gamma=0.01); s.method, s.t_star
    ('tan-fit', 87)
    """
    tau = np.asarray(tau, float)
    t = np.arange(len(tau), dtype=float)
    first = slice(0, min(FIT_POINTS, len(tau)))
    fit = fit_tan(t, tau)
    head_fit = fit_tan(t[first], tau[first]) if len(tau) > FIT_POINTS else fit
    if head_fit.r2 >= MIN_R2 and fit.r2 >= MIN_R2:
        steep = np.nonzero(fit.derivative(t) > gamma)[0]
        t_star = int(steep[0]) if len(steep) else len(tau) - 1
        return StopThreshold(float(fit(t_star)), t_star, "tan-fit", gamma, fit)
    derivative = smoothed_derivative(tau)
    steep = np.nonzero(derivative > gamma)[0]
    t_star = int(steep[0]) if len(steep) else len(tau) - 1
    return StopThreshold(float(tau[t_star]), t_star, "finite-difference", gamma, fit)


def checked_stop(stop: StopThreshold, healthy: list[float], calibrated_tau: float) -> StopThreshold:
    """``stop`` unless its τ_stop is absurd — not finite, not positive, or more than :data:`HEALTHY_RANGE_FACTOR`
    times away from every τ_stop of the healthy calibration scans (``healthy``, may be empty) — in which case the
    median healthy τ_stop replaces it (the calibrated τ when the bundle recorded none), and ``fallback`` says why.

    >>> path = stop_threshold(0.05 * np.tan(0.015 * np.arange(100.0)), gamma=0.01)
    >>> checked_stop(path, [0.3], calibrated_tau=1.0).fallback is None
    True
    >>> bad = replace(path, tau_stop=0.0)
    >>> fixed = checked_stop(bad, [0.3, 0.5], calibrated_tau=1.0); fixed.tau_stop, fixed.fallback
    (0.4, 'τ_stop 0 is not positive')
    """
    value = stop.tau_stop
    healthy = [h for h in healthy if np.isfinite(h) and h > 0]
    if not np.isfinite(value):
        reason = f"τ_stop {value} is not finite"
    elif value <= 0:
        reason = f"τ_stop {value:.4g} is not positive"
    elif healthy and not any(h / HEALTHY_RANGE_FACTOR <= value <= h * HEALTHY_RANGE_FACTOR for h in healthy):
        reason = (f"τ_stop {value:.4g} is more than {HEALTHY_RANGE_FACTOR:g}× away from the healthy calibration "
                  f"scans' ({', '.join(f'{h:.4g}' for h in healthy)})")
    else:
        return stop
    replacement = float(np.median(healthy)) if healthy else float(calibrated_tau)
    return replace(stop, tau_stop=replacement, fallback=reason, found=float(value))


def above_threshold(anomaly_map, threshold: float, brain):
    """The segmentation a threshold gives: ``anomaly_map > threshold`` inside ``brain``, bool, for numpy arrays or
    torch tensors of one shape (on any grid: the map's and the brain's must be the same)."""
    return (anomaly_map > threshold) & brain
