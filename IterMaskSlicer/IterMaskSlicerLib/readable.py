"""Thresholds in words a clinician can read: relative to the bundle's calibration on healthy scans.

A bundle records one point of the healthy error distribution per threshold: the calibrated segmentation threshold
is the ``threshold_percentile`` (99th) of healthy voxels of final anomaly maps, so 1 % of healthy voxels lie above
it; τ is the ``tau_percentile`` (80th) of errors of hidden healthy voxels. Other values are stated relative to those.
A bundle calibrated by hand may not record the percentiles; its thresholds are then stated as ratios only.
"""
from __future__ import annotations


def threshold_text(threshold: float, calibration: dict, tau_stop: float | None = None) -> tuple[str, str]:
    """(label, tooltip) for a segmentation threshold; ``calibration``: the bundle's, as the worker reports it
    (``threshold`` and ``threshold_percentile``, which may be None)."""
    calibrated, percentile = calibration["threshold"], calibration.get("threshold_percentile")
    ratio = threshold / calibrated
    if tau_stop is not None and abs(threshold - tau_stop) <= 1e-6 * max(tau_stop, 1.0):
        label = f"{ratio:.2f} × calibrated: this scan's own τ_stop (IterMask3D)"
    elif percentile is None:
        label = "calibrated" if abs(ratio - 1.0) < 0.005 else f"{ratio:.2f} × calibrated"
    elif abs(ratio - 1.0) < 0.005:
        label = f"calibrated: flags about {100.0 - percentile:g} % of healthy voxels"
    else:
        label = (f"{ratio:.2f} × calibrated: {'fewer' if ratio > 1 else 'more'} than {100.0 - percentile:g} % of "
                 "healthy voxels flagged")
    tooltip = (f"Raw threshold {threshold:.4g} (squared error of the normalised image). Calibrated {calibrated:.4g}"
               + ("" if percentile is None else f": the {percentile:g}th percentile of healthy voxels of final anomaly "
                  "maps") + ". Higher: fewer false positives, smaller lesions.")
    return label, tooltip


def tau_text(tau: float, calibration: dict) -> tuple[str, str]:
    """(label, tooltip) for the shrink threshold τ."""
    calibrated, percentile = calibration["tau"], calibration.get("tau_percentile")
    ratio = tau / calibrated
    label = "calibrated τ" if abs(ratio - 1.0) < 0.005 else f"{ratio:.2f} × calibrated τ"
    tooltip = (f"Raw τ {tau:.4g}. Calibrated {calibrated:.4g}"
               + ("" if percentile is None else f": the {percentile:g}th percentile of the errors of hidden healthy "
                  "voxels") + ". Raise it and step again to shrink the mask further.")
    return label, tooltip
