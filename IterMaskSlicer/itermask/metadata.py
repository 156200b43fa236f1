"""What a model bundle records about itself, typed: the JSON stored beside the weights as frozen dataclasses.

One class per section of the JSON, each with ``from_json`` (checks the section; any problem is a one-line
:class:`ItermaskError`) and ``to_json`` (gives the same JSON back)::

    BundleMetadata   name, modality, dims, networks, normalisation; training provenance as written
      method         Method             itermask, or an evaluation baseline (ae, dae) and its noise
      architecture   Architecture       UNet widths and skip connections
      grid           Grid               the model grid: spacing and smallest size
      frequency      FrequencyFilter    the high-pass filter that gives x_f
      policy         PolicySettings     the default policy and the settings of every policy
      masks          SliceMasks (2D) or VolumeMasks (3D), the random masks training hides
      calibration    Calibration        τ, the segmentation threshold and the healthy scans' scores
      segmentation   SegmentationChoice the rule the validation chose, or None

Defaults that are part of the format (policy settings, mask counts, orientation) are written once, here; training
choices (widths, spacing, mask sizes) are :class:`~itermask_training.config.TrainConfig`'s. A field that older
bundles may lack has the value they meant as its default. No torch: Slicer reads bundles before torch is installed.

>>> grid = Grid.from_json({"spacing_mm": 2.0, "min_size": [1, 96, 96], "orientation": "RAS axial"})
>>> grid.min_size, grid.to_json()["min_size"]
((1, 96, 96), [1, 96, 96])
>>> Grid.from_json({"spacing_mm": 2.0})
Traceback (most recent call last):
itermask.errors.ItermaskError: bundle metadata grid lacks min_size
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import ItermaskError

FORMAT = "itermask-bundle"
FORMAT_VERSION = 1
MODALITIES = ("FLAIR", "T1", "T1CE", "T2")
# The networks of each method by dims, in a fixed order (the last is the one that reconstructs hidden images).
LAYOUTS = {"itermask": {2: ("first", "masked"), 3: ("unified",)},
           "ae": {2: ("autoencoder",), 3: ("autoencoder",)},
           "dae": {2: ("denoiser",), 3: ("denoiser",)}}
POLICY_FOR_DIMS = {2: "itermask2", 3: "itermask3d"}  # each paper's own policy, a new bundle's default


def check_modality(modality: str) -> str:
    """``modality`` in upper case, if it is one of :data:`MODALITIES`.

    >>> check_modality("flair")
    'FLAIR'
    """
    upper = str(modality).upper()
    if upper not in MODALITIES:
        raise ItermaskError(f"unknown modality {modality!r} (choose from {', '.join(MODALITIES)})")
    return upper


def _optional():
    """A field whose JSON key is left out while its value is None (a value a bundle may not have)."""
    return field(default=None, metadata={"omit_if_none": True})


def _to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_json(v) for f in dataclasses.fields(value)
                if (v := getattr(value, f.name)) is not None or not f.metadata.get("omit_if_none")}
    if isinstance(value, (tuple, list)):
        return [_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    return value


class _Section:
    """A flat section: JSON lists become tuples, unknown or missing keys are errors."""

    section = ""

    @classmethod
    def from_json(cls, data: Any):
        return cls(**_checked_keys(cls, data, cls.section))

    def to_json(self) -> dict:
        return _to_json(self)


def _checked_keys(cls, data: Any, section: str) -> dict:
    where = f"bundle metadata {section}".rstrip()
    if not isinstance(data, dict):
        raise ItermaskError(f"{where} is not a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ItermaskError(f"{where} has unknown field(s) {', '.join(unknown)}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ItermaskError(f"{where} lacks {', '.join(missing)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


@dataclass(frozen=True, kw_only=True)
class Method(_Section):
    """``name``: ``itermask`` or an evaluation baseline, ``ae`` or ``dae`` (keys of :data:`LAYOUTS`). A DAE also
    records its noise: ``noise`` ``positive`` or ``signed``, ``noise_sd`` in z-score units, ``noise_cell_mm``."""

    section = "method"
    name: str = "itermask"  # bundles from before the baselines existed
    noise: str | None = _optional()
    noise_sd: float | None = _optional()
    noise_cell_mm: float | None = _optional()

    def __post_init__(self):
        if self.name not in LAYOUTS:
            raise ItermaskError(f"unknown method {self.name!r} (choose from {', '.join(LAYOUTS)})")


@dataclass(frozen=True, kw_only=True)
class Architecture(_Section):
    """A UNet with ``channels`` per level (the first is the widest resolution's); ``skips`` False is the AE."""

    section = "architecture"
    name: str = "unet"
    channels: tuple[int, ...]
    skips: bool = True


@dataclass(frozen=True, kw_only=True)
class Grid(_Section):
    """The model grid: isotropic ``spacing_mm``, at least ``min_size`` (z, y, x) voxels, RAS axes with axial
    slices along z."""

    section = "grid"
    spacing_mm: float
    min_size: tuple[int, int, int]
    orientation: str = "RAS axial"

    def __post_init__(self):
        if not (isinstance(self.spacing_mm, (int, float)) and self.spacing_mm > 0) or len(self.min_size) != 3:
            raise ItermaskError(f"bundle metadata grid: spacing {self.spacing_mm!r} mm and size {self.min_size!r} "
                                "are not a model grid")


@dataclass(frozen=True, kw_only=True)
class FrequencyFilter(_Section):
    """The high-pass filter giving ``x_f``: cut-off ``radius`` in cycles on a ``reference_size`` grid (scaled to
    the actual grid, so the cut-off per mm stays fixed). ``masked_input`` False: the spatial-only ablation, whose
    masked (or unified) network never sees ``x_f``."""

    section = "frequency"
    radius: float
    reference_size: int
    masked_input: bool = True  # bundles from before the ablation existed


@dataclass(frozen=True, kw_only=True)
class PolicySettings(_Section):
    """``default``: the policy a session uses unless told (see :mod:`itermask.policies`). IterMask²: the first step
    unmasks ``first_unmask_fraction`` of the brain (the lowest errors). Both policies stop when the mask shrinks by
    less than ``min_shrink`` of itself, or after ``max_iterations``. IterMask3D's shrink path hides
    ``path_step_fraction`` of the brain per step, and τ_stop is where the path's tangent angle falls to ``gamma``."""

    section = "policy"
    default: str
    first_unmask_fraction: float = 0.4
    min_shrink: float = 0.01
    max_iterations: int = 50
    gamma: float = 0.05
    path_step_fraction: float = 0.01


@dataclass(frozen=True, kw_only=True)
class SliceMasks(_Section):
    """IterMask²'s training masks on 2D slices: ``patches`` Gaussian patches of ``sides`` pixels, each pixel
    coarsened to ``coarse_px``. Wholly hidden slices are the first network's, never the masked one's."""

    section = "masks (2D)"
    patches: int = 1000
    sides: tuple[int, ...] = (4, 8, 16)
    coarse_px: float
    whole_brain_fraction = 0.0  # not a field: no 2D sample is hidden whole


@dataclass(frozen=True, kw_only=True)
class VolumeMasks(_Section):
    """IterMask3D's training masks: ``points`` Gaussian clouds at each of ``cells_mm`` scales; a share
    ``whole_brain_fraction`` of the samples is hidden whole, so the unified network also learns the first
    iteration."""

    section = "masks (3D)"
    points: int = 100_000
    cells_mm: tuple[float, ...]
    whole_brain_fraction: float


@dataclass(frozen=True, kw_only=True)
class HealthyScan(_Section):
    """One healthy calibration scan's score under one policy (see :meth:`itermask.session.Session.result`):
    ``final_mask_ml`` on the model grid, ``mean_error`` inside the brain, and IterMask3D's ``tau_stop``."""

    section = "calibration healthy_scans"
    final_mask_ml: float | None = _optional()  # one-shot baselines have no mask
    mean_error: float
    tau_stop: float | None = _optional()


@dataclass(frozen=True, kw_only=True)
class Calibration(_Section):
    """Measured on healthy scans held out from training (:mod:`itermask.thresholding`). ``tau``: the shrink
    threshold, the ``tau_percentile`` of healthy hidden-voxel errors (``tau_voxels`` of them, ``samples`` slices or
    volumes); ``threshold``: the segmentation threshold, the ``threshold_percentile`` of ``threshold_voxels``
    healthy voxels of final anomaly maps; ``intensity_threshold``: the plain intensity baseline's, at
    ``intensity_percentile``; ``healthy_scans``: policy → each calibration scan's score; ``method``: how, in words.
    All in squared normalised intensity (the intensity threshold in z-scores). An untrained bundle has none."""

    section = "calibration"
    tau: float | None = _optional()  # one-shot baselines have no τ
    tau_percentile: float | None = _optional()
    intensity_threshold: float | None = _optional()
    intensity_percentile: float | None = _optional()
    tau_voxels: int | None = _optional()
    samples: int | None = _optional()
    threshold: float | None = _optional()
    threshold_percentile: float | None = _optional()
    threshold_voxels: int | None = _optional()
    healthy_scans: dict[str, tuple[HealthyScan, ...]] = field(default_factory=dict)
    method: str | None = _optional()

    def __post_init__(self):
        # JSON readers accept NaN; a NaN τ or threshold would silently give empty masks.
        for key in ("tau", "threshold"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ItermaskError(f"calibration {key} is {value!r}, not a finite number (re-calibrate the model "
                                    "with `itermask calibrate`)")

    @classmethod
    def from_json(cls, data: Any) -> "Calibration":
        values = _checked_keys(cls, data, cls.section)
        scans = values.get("healthy_scans", {})
        if not isinstance(scans, dict):
            raise ItermaskError("bundle metadata calibration healthy_scans is not a JSON object")
        values["healthy_scans"] = {policy: tuple(HealthyScan.from_json(s) for s in found)
                                   for policy, found in scans.items()}
        return cls(**values)

    def healthy(self, policy: str) -> tuple[HealthyScan, ...]:
        """The healthy calibration scans' scores under ``policy`` (none if it was not calibrated)."""
        return self.healthy_scans.get(policy, ())


@dataclass(frozen=True, kw_only=True)
class SegmentationChoice(_Section):
    """The rule the validation chose for ``policy`` (``python -m itermask_evaluation.validation --apply``): segment
    the ``anomaly`` map (see :data:`itermask.rules.ANOMALY_MAPS`) at ``threshold``, or at the policy's own when None,
    cleaned up by ``median``, ``rim_mm`` and ``min_component_ml`` (see :mod:`itermask.postprocess`; absent: none).
    The rest is provenance: the rule in words, its mean validation Dice over ``validation_scans``, the false-positive
    ml it left in healthy brains (median and largest over ``healthy_scans``), whether that meets the bound a default
    must meet (``healthy_bound_met``), ``source`` and ``chosen_by``."""

    section = "segmentation"
    policy: str
    anomaly: str
    threshold: float | None
    median: bool | None = _optional()
    rim_mm: float | None = _optional()
    min_component_ml: float | None = _optional()
    rule: str | None = _optional()
    validation_dice: float | None = _optional()
    validation_scans: int | None = _optional()
    healthy_fp_ml_median: float | None = _optional()
    healthy_fp_ml_max: float | None = _optional()
    healthy_scans: str | None = _optional()
    healthy_bound_met: bool | None = _optional()
    source: str | None = _optional()
    chosen_by: str | None = _optional()


@dataclass(frozen=True, kw_only=True)
class BundleMetadata:
    """Everything a bundle records: what its networks are, the grid and filter they were trained on, how a session
    runs with them, their calibration, the chosen segmentation rule, and (``training``) the training run as
    :meth:`TrainConfig.as_json` wrote it, plus its ``calibration_data``, kept as written."""

    name: str
    modality: str
    dims: int
    networks: tuple[str, ...]
    method: Method = field(default_factory=Method)
    architecture: Architecture
    grid: Grid
    normalisation: str = "iterative-zscore"
    frequency: FrequencyFilter
    policy: PolicySettings
    masks: SliceMasks | VolumeMasks
    calibration: Calibration = field(default_factory=Calibration)
    training: dict | None = _optional()
    segmentation: SegmentationChoice | None = _optional()

    def __post_init__(self):
        check_modality(self.modality)
        expected = LAYOUTS[self.method.name].get(self.dims)
        if expected is None or set(self.networks) != set(expected):
            raise ItermaskError(f"method {self.method.name!r}, dims {self.dims} with networks "
                                f"{list(self.networks)} is not a known layout")
        if not isinstance(self.masks, SliceMasks if self.dims == 2 else VolumeMasks):
            raise ItermaskError(f"bundle metadata masks are not a {self.dims}D model's")

    @classmethod
    def from_json(cls, data: Any) -> "BundleMetadata":
        """Check and type the JSON a bundle file holds; a newer format version is an error."""
        if not isinstance(data, dict):
            raise ItermaskError("bundle metadata is not a JSON object")
        version = data.get("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ItermaskError(f"needs a newer IterMask (bundle format {version})")
        values = _checked_keys(cls, {k: v for k, v in data.items() if k not in ("format", "format_version")}, "")
        sections = {"method": Method, "architecture": Architecture, "grid": Grid, "frequency": FrequencyFilter,
                    "policy": PolicySettings, "masks": SliceMasks if values["dims"] == 2 else VolumeMasks,
                    "calibration": Calibration, "segmentation": SegmentationChoice}
        for key, section in sections.items():
            if values.get(key) is not None:
                values[key] = section.from_json(values[key])
        return cls(**values)

    def to_json(self) -> dict:
        """The JSON written into a bundle file, with its format and version."""
        return dict(_to_json(self), format=FORMAT, format_version=FORMAT_VERSION)

    @property
    def masked_role(self) -> str:
        """The network that reconstructs partly hidden images (``masked`` in 2D, ``unified`` in 3D), or a
        baseline's only network."""
        return LAYOUTS[self.method.name][self.dims][-1]
