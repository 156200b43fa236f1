"""Thresholds in words a clinician can read: relative to the threshold the session defaults to, saying where it
came from.

The segmentation threshold's reference (:func:`threshold_reference`) is the bundle's recorded rule's threshold where
the rule applies to the policy (chosen on validation scans for its map, e.g. ``hyperintense``: words relative to that
default, no healthy-percentile claim, since the calibration is of another map), else the policy's own: this scan's
τ_stop once IterMask3D's path has found it, else the calibrated threshold. A bundle records one point of the healthy
error distribution per threshold: the calibrated segmentation threshold is the ``threshold_percentile`` (99th) of
healthy voxels of final (squared error) anomaly maps, so 1 % of healthy voxels lie above it; τ is the
``tau_percentile`` (80th) of errors of hidden healthy voxels. A bundle calibrated by hand may not record the
percentiles; its thresholds are then stated as ratios only.
"""
from __future__ import annotations

# What each of :data:`itermask.rules.ANOMALY_MAPS` is, for a tooltip.
MAP_WORDS = {
    "squared": "squared error of the normalised image against its reconstruction",
    "bright": "squared error where the image is brighter than its reconstruction",
    "dark": "squared error where the image is darker than its reconstruction",
    "hyperintense": "squared error where the image is brighter than its reconstruction and itself hyper-intense",
}


def threshold_reference(session) -> dict:
    """What ``session``'s (an :class:`itermask.Session`) segmentation threshold is stated against, plain JSON:
    ``kind`` ``"rule"`` (the bundle's recorded rule applies and records a threshold: ``value`` is it) or
    ``"policy"`` (``value``: the calibrated threshold, which IterMask3D's τ_stop replaces once known, see
    :func:`reference_value`); ``anomaly``: the segmented map's name; ``source``: how the default was chosen."""
    rule = session.rule
    if rule.threshold is not None:
        return {"kind": "rule", "value": float(rule.threshold), "anomaly": rule.anomaly, "source": rule.source}
    return {"kind": "policy", "value": float(session.model.calibration.threshold), "anomaly": rule.anomaly,
            "source": session.policy.threshold_source}


def reference_value(reference: dict, tau_stop: float | None) -> float:
    """The raw threshold ``reference`` (:func:`threshold_reference`) stands for now: the session's default
    threshold while no one has changed τ (``tau_stop``: the session's, None until IterMask3D's path has found it)."""
    if reference["kind"] == "policy" and tau_stop is not None:
        return tau_stop
    return reference["value"]


def _more_or_fewer(ratio: float) -> str:
    return "fewer" if ratio > 1 else "more"


def threshold_text(threshold: float, reference: dict, calibration: dict,
                   tau_stop: float | None = None) -> tuple[str, str]:
    """(label, tooltip) for a segmentation threshold; ``reference``: :func:`threshold_reference`'s;
    ``calibration``: the bundle's, as the worker reports it (``threshold`` and ``threshold_percentile``, which may be
    None); ``tau_stop``: the session's (None until known, and for IterMask²)."""
    default = reference_value(reference, tau_stop)
    ratio, anomaly = threshold / default, reference["anomaly"]
    at_default = abs(ratio - 1.0) < 0.005
    tooltip = f"Raw threshold {threshold:.4g} on the {anomaly} map ({MAP_WORDS[anomaly]}). {{}}. Higher: fewer " \
              "voxels flagged, smaller lesions."
    if reference["kind"] == "rule":
        label = (f"1.00 × default: chosen on the validation split for the {anomaly} map" if at_default
                 else f"{ratio:.2f} × default ({_more_or_fewer(ratio)} voxels flagged)")
        return label, tooltip.format(f"Default {default:.4g}: {reference['source']}")
    calibrated = calibration["threshold"]
    # The calibrated percentile is of the squared error map: it says nothing about another map's voxels.
    percentile = calibration.get("threshold_percentile") if anomaly == "squared" else None
    healthy = f"the calibrated {calibrated:.4g}" + (
        "" if percentile is None else f", the {percentile:g}th percentile of healthy voxels of final anomaly maps")
    if tau_stop is not None:
        label = ("1.00 × τ_stop: this scan's own threshold (IterMask3D)" if at_default
                 else f"{ratio:.2f} × τ_stop ({_more_or_fewer(ratio)} voxels flagged)")
        return label, tooltip.format(f"τ_stop {tau_stop:.4g}, from this scan's shrink path, is "
                                     f"{tau_stop / calibrated:.2f} × {healthy}")
    if percentile is None:
        label = "calibrated" if at_default else f"{ratio:.2f} × calibrated"
    elif at_default:
        label = f"calibrated: flags about {100.0 - percentile:g} % of healthy voxels"
    else:
        label = (f"{ratio:.2f} × calibrated: {_more_or_fewer(ratio)} than {100.0 - percentile:g} % of healthy voxels "
                 "flagged")
    return label, tooltip.format(f"Default: {healthy}")


def tau_text(tau: float, calibration: dict) -> tuple[str, str]:
    """(label, tooltip) for the shrink threshold τ."""
    calibrated, percentile = calibration["tau"], calibration.get("tau_percentile")
    ratio = tau / calibrated
    label = "calibrated τ" if abs(ratio - 1.0) < 0.005 else f"{ratio:.2f} × calibrated τ"
    tooltip = (f"Raw τ {tau:.4g}. Calibrated {calibrated:.4g}"
               + ("" if percentile is None else f": the {percentile:g}th percentile of the errors of hidden healthy "
                  "voxels") + ". Raise it and step again to shrink the mask further.")
    return label, tooltip
