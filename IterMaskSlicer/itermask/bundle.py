"""Model bundles: one ``.pt`` file holding JSON metadata and tensors only, loaded with ``weights_only=True``.

Layout of the file (a plain ``torch.save`` of a dict, so loading runs no code)::

    {"itermask_bundle": "<JSON metadata>", "weights": {"<network>.<parameter>": tensor, ...}}

The metadata records everything needed to reproduce a result: architecture, dims, modality, model grid and spacing,
normalisation, frequency radius, policy settings, calibration (τ, segmentation threshold), training provenance.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from .discovery import (BUNDLE_SUFFIX, MODALITIES, available_models, check_modality,  # noqa: F401 (re-exported)
                        default_model_name, model_directories)
from ._shared import atomic_file
from .errors import ItermaskError
from .networks import UNet

FORMAT_VERSION = 1
# The networks of each method by dims, in a fixed order (the last is the one that reconstructs hidden images).
LAYOUTS = {"itermask": {2: ("first", "masked"), 3: ("unified",)},
           "ae": {2: ("autoencoder",), 3: ("autoencoder",)},
           "dae": {2: ("denoiser",), 3: ("denoiser",)}}
_REQUIRED = ("name", "modality", "dims", "networks", "architecture", "grid", "normalisation", "frequency", "policy",
             "calibration")


class ModelBundle:
    """Metadata plus the reconstruction network(s) of one trained model.

    ``networks`` maps a role to a UNet: 2D IterMask² bundles have ``"first"`` (input ``x_f`` only, used on the fully
    masked first iteration) and ``"masked"`` (input ``[x̂, x_f]``, or ``[x̂]`` for the spatial-only ablation, whose
    ``frequency.masked_input`` is false); IterMask3D bundles have ``"unified"``. The evaluation baselines (``method`` ``ae`` or
    ``dae``) have one network, ``"autoencoder"`` or ``"denoiser"``, that sees the image alone.
    """

    def __init__(self, metadata: dict, networks: dict[str, UNet]):
        self.metadata = metadata
        self.networks = networks

    name = property(lambda self: self.metadata["name"])
    modality = property(lambda self: self.metadata["modality"])
    dims = property(lambda self: int(self.metadata["dims"]))
    calibration = property(lambda self: self.metadata["calibration"])

    @property
    def method(self) -> str:
        """``itermask``, or the baseline a bundle was trained as (``ae``, ``dae``; see :data:`LAYOUTS`)."""
        return method_of(self.metadata)

    @property
    def uses_frequency(self) -> bool:
        """Whether the masked (or unified) network sees ``x_f``: False for the spatial-only ablation."""
        return uses_frequency(self.metadata)

    @property
    def masked_role(self) -> str:
        """The network that reconstructs partly hidden images (``masked`` in 2D, ``unified`` in 3D), or a
        baseline's only network."""
        return LAYOUTS[self.method][self.dims][-1]

    @property
    def grid_divisor(self) -> tuple[int, int, int]:
        """(z, y, x) multiple every model-grid side must be for this bundle's networks."""
        return grid_divisor(self.dims, self.networks[self.masked_role].divisor)

    @classmethod
    def create(cls, metadata: dict) -> "ModelBundle":
        """Fresh (untrained) networks as ``metadata["architecture"]`` describes them."""
        _check_metadata(metadata, "metadata")
        arch = metadata["architecture"]
        hidden_image_and_frequency = 1 + uses_frequency(metadata)
        inputs = {"first": 1, "masked": hidden_image_and_frequency, "unified": hidden_image_and_frequency,
                  "autoencoder": 1, "denoiser": 1}
        networks = {role: UNet(inputs[role], tuple(arch["channels"]), int(metadata["dims"]), arch.get("skips", True))
                    for role in metadata["networks"]}
        return cls(metadata, networks)

    def to(self, device: torch.device | str) -> "ModelBundle":
        for net in self.networks.values():
            net.to(device)
        return self

    def save(self, path: str | os.PathLike) -> Path:
        """Write the bundle atomically (a reader never sees half a file)."""
        path = Path(path)
        weights = {f"{role}.{k}": v.detach().cpu().contiguous()
                   for role, net in self.networks.items() for k, v in net.state_dict().items()}
        meta = dict(self.metadata, format="itermask-bundle", format_version=FORMAT_VERSION)
        with atomic_file(path) as handle:
            torch.save({"itermask_bundle": json.dumps(meta, indent=1), "weights": weights}, handle)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ModelBundle":
        """Read and check a bundle file; any problem is an :class:`ItermaskError` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise ItermaskError(f"model file not found: {path}")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt, truncated or code-carrying files
            raise ItermaskError(f"{path} is not a readable IterMask model bundle ({type(exc).__name__})") from None
        if not isinstance(raw, dict) or "itermask_bundle" not in raw or "weights" not in raw:
            raise ItermaskError(f"{path} is not an IterMask model bundle (no IterMask metadata in it)")
        try:
            metadata = json.loads(raw["itermask_bundle"])
        except (TypeError, ValueError):
            raise ItermaskError(f"{path}: the bundle metadata is not valid JSON") from None
        if metadata.get("format_version", 0) > FORMAT_VERSION:
            raise ItermaskError(f"{path} needs a newer IterMask (bundle format {metadata['format_version']})")
        _check_metadata(metadata, str(path))
        bundle = cls.create(metadata)
        for role, net in bundle.networks.items():
            prefix = role + "."
            state = {k[len(prefix):]: v for k, v in raw["weights"].items() if k.startswith(prefix)}
            try:
                net.load_state_dict(state)
            except RuntimeError:
                raise ItermaskError(f"{path}: the weights of network '{role}' do not match its architecture") from None
            net.eval()
        return bundle


def method_of(metadata: dict) -> str:
    """The ``method`` name bundle ``metadata`` records; bundles from before the baselines existed are ``itermask``."""
    return metadata.get("method", {}).get("name", "itermask")


def uses_frequency(metadata: dict) -> bool:
    return bool(metadata["frequency"].get("masked_input", True))


def grid_divisor(dims: int, net_divisor: int) -> tuple[int, int, int]:
    """(z, y, x) multiple every model-grid side must be: a 2D model runs axial slices, so none along z.

    >>> grid_divisor(2, 8), grid_divisor(3, 8)
    ((1, 8, 8), (8, 8, 8))
    """
    return (1 if dims == 2 else net_divisor, net_divisor, net_divisor)


def _check_metadata(metadata: dict, where: str) -> None:
    missing = [k for k in _REQUIRED if k not in metadata]
    if missing:
        raise ItermaskError(f"{where}: bundle metadata lacks {', '.join(missing)}")
    if metadata["modality"] not in MODALITIES:
        raise ItermaskError(f"{where}: unknown modality {metadata['modality']!r}")
    method = method_of(metadata)
    expected = LAYOUTS.get(method, {}).get(int(metadata["dims"]))
    if expected is None or set(metadata["networks"]) != set(expected):
        raise ItermaskError(f"{where}: method {method!r}, dims {metadata['dims']} with networks {metadata['networks']} "
                           "is not a known layout")
    # JSON readers accept NaN; a NaN τ or threshold would silently give empty masks.
    for key in ("tau", "threshold"):
        value = metadata["calibration"].get(key)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ItermaskError(f"{where}: calibration {key} is {value!r}, not a finite number (re-calibrate the "
                                "model with `itermask calibrate`)")


def load_model(name_or_path: str | os.PathLike) -> ModelBundle:
    """Load a bundled model by name (see ``itermask models``) or a bundle file by path."""
    models = available_models()
    if str(name_or_path) in models:
        return ModelBundle.load(models[str(name_or_path)])
    path = Path(name_or_path)
    if path.suffix == BUNDLE_SUFFIX or path.exists():
        return ModelBundle.load(path)
    known = ", ".join(sorted(models)) or "none installed"
    raise ItermaskError(f"unknown model {str(name_or_path)!r} (available: {known})")
