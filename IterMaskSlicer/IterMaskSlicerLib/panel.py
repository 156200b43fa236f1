"""What the module's panel shows of a session, for every face (the Slicer widget, the web page): the choices it
offers, where its sliders stand and what its labels say.

τ is shown relative to the bundle's calibration (1.0: the calibrated value), the segmentation threshold relative to
the session's default (1.0: the bundle's recorded rule's threshold, or the policy's own; see
:func:`.readable.threshold_reference`), so one slider range fits every model; the labels are :mod:`.readable`'s. No
Qt, no trame.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import readable

POLICIES = (("IterMask² (calibrated τ)", "itermask2"), ("IterMask3D (subject-specific τ)", "itermask3d"))
SOURCE_LABELS = {"thresholded": "Thresholded map (outlined)", "mask": "Current mask (filled)"}
SLIDER_MAXIMUM = 5.0  # τ and threshold sliders run from 0 to 5 × their reference (further if the session is beyond)


@dataclass(frozen=True)
class PanelValues:
    """The panel's numbers and words for one state of a session.

    ``iteration``/``iterations``: the shown iteration and how many are computed; ``tau``, ``threshold``: slider
    positions relative to the calibrated τ and to the default threshold (``threshold`` None before the first step);
    ``*_maximum``: the sliders' top.
    """

    iteration: int
    iterations: int
    tau: float
    tau_maximum: float
    tau_label: str
    tau_tooltip: str
    tau_stop_label: str
    threshold: float | None
    threshold_maximum: float
    threshold_label: str
    threshold_tooltip: str


def panel_values(logic) -> PanelValues | None:
    """The panel for ``logic``'s session (an :class:`.logic.IterMaskLogic`); None when no session is open."""
    state = logic.state
    if not state:
        return None
    calibration = logic.model_info["calibration"]
    tau = state["tau"] / calibration["tau"]
    tau_label, tau_tooltip = readable.tau_text(state["tau"], calibration)
    tau_stop = "—" if state["tau_stop"] is None else readable.tau_text(state["tau_stop"], calibration)[0]
    threshold, threshold_label, threshold_tooltip = None, "—", ""
    if logic.preview is not None:
        threshold = logic.threshold / default_threshold(logic)
        threshold_label, threshold_tooltip = readable.threshold_text(
            logic.threshold, logic.model_info["threshold_reference"], calibration, state["tau_stop"])
    return PanelValues(iteration=state["position"], iterations=state["count"], tau=tau,
                       tau_maximum=max(SLIDER_MAXIMUM, tau), tau_label=tau_label, tau_tooltip=tau_tooltip,
                       tau_stop_label=tau_stop, threshold=threshold,
                       threshold_maximum=max(SLIDER_MAXIMUM, threshold or 0.0), threshold_label=threshold_label,
                       threshold_tooltip=threshold_tooltip)


def tau_from_slider(logic, relative: float) -> float:
    """The raw τ a slider position (× calibrated τ) stands for."""
    return float(relative) * logic.model_info["calibration"]["tau"]


def default_threshold(logic) -> float:
    """The raw segmentation threshold at the slider's 1.0: the session's default (see
    :func:`.readable.reference_value`)."""
    return readable.reference_value(logic.model_info["threshold_reference"], logic.state["tau_stop"])


def threshold_from_slider(logic, relative: float) -> float:
    """The raw segmentation threshold a slider position (× :func:`default_threshold`) stands for."""
    return float(relative) * default_threshold(logic)
