"""Model bundles: one ``.pt`` file holding JSON metadata and tensors only, loaded with ``weights_only=True``.

Layout of the file (a plain ``torch.save`` of a dict, so loading runs no code)::

    {"itermask_bundle": "<JSON metadata>", "weights": {"<network>.<parameter>": tensor, ...}}

The metadata records everything needed to reproduce a result: architecture, dims, modality, model grid and spacing,
normalisation, frequency radius, policy settings, calibration (τ, segmentation threshold), training provenance; it
is read into the typed :class:`~itermask.metadata.BundleMetadata`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ._shared import atomic_file
from .discovery import BUNDLE_SUFFIX, available_models, parse_metadata
from .errors import ItermaskError
from .metadata import BundleMetadata
from .networks import UNet


class ModelBundle:
    """Metadata plus the reconstruction network(s) of one trained model.

    ``networks`` maps a role to a UNet: 2D IterMask² bundles have ``"first"`` (input ``x_f`` only, used on the fully
    masked first iteration) and ``"masked"`` (input ``[x̂, x_f]``, or ``[x̂]`` for the spatial-only ablation, whose
    ``frequency.masked_input`` is false); IterMask3D bundles have ``"unified"``. The evaluation baselines
    (``method`` ``ae`` or ``dae``) have one network, ``"autoencoder"`` or ``"denoiser"``, that sees the image alone.

    ``metadata`` is typed (:mod:`itermask.metadata`) and frozen: change it with ``dataclasses.replace``, e.g.
    ``bundle.metadata = replace(bundle.metadata, calibration=calibration)``, then :meth:`save`.
    """

    def __init__(self, metadata: BundleMetadata, networks: dict[str, UNet]):
        self.metadata = metadata
        self.networks = networks

    name = property(lambda self: self.metadata.name)
    modality = property(lambda self: self.metadata.modality)
    dims = property(lambda self: self.metadata.dims)
    calibration = property(lambda self: self.metadata.calibration)
    masked_role = property(lambda self: self.metadata.masked_role, doc=BundleMetadata.masked_role.__doc__)

    @property
    def method(self) -> str:
        """``itermask``, or the baseline a bundle was trained as (``ae``, ``dae``; see
        :data:`itermask.metadata.LAYOUTS`)."""
        return self.metadata.method.name

    @property
    def uses_frequency(self) -> bool:
        """Whether the masked (or unified) network sees ``x_f``: False for the spatial-only ablation."""
        return self.metadata.frequency.masked_input

    @property
    def grid_divisor(self) -> tuple[int, int, int]:
        """(z, y, x) multiple every model-grid side must be for this bundle's networks."""
        return grid_divisor(self.dims, self.networks[self.masked_role].divisor)

    @classmethod
    def create(cls, metadata: BundleMetadata) -> "ModelBundle":
        """Fresh (untrained) networks as ``metadata.architecture`` describes them."""
        arch = metadata.architecture
        hidden_image_and_frequency = 1 + metadata.frequency.masked_input
        inputs = {"first": 1, "masked": hidden_image_and_frequency, "unified": hidden_image_and_frequency,
                  "autoencoder": 1, "denoiser": 1}
        networks = {role: UNet(inputs[role], arch.channels, metadata.dims, arch.skips) for role in metadata.networks}
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
        with atomic_file(path) as handle:
            torch.save({"itermask_bundle": json.dumps(self.metadata.to_json(), indent=1), "weights": weights}, handle)
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
        bundle = cls.create(parse_metadata(raw["itermask_bundle"], path))
        for role, net in bundle.networks.items():
            prefix = role + "."
            state = {k[len(prefix):]: v for k, v in raw["weights"].items() if k.startswith(prefix)}
            try:
                net.load_state_dict(state)
            except RuntimeError:
                raise ItermaskError(f"{path}: the weights of network '{role}' do not match its architecture") from None
            net.eval()
        return bundle


def grid_divisor(dims: int, net_divisor: int) -> tuple[int, int, int]:
    """(z, y, x) multiple every model-grid side must be: a 2D model runs axial slices, so none along z.

    >>> grid_divisor(2, 8), grid_divisor(3, 8)
    ((1, 8, 8), (8, 8, 8))
    """
    return (1 if dims == 2 else net_divisor, net_divisor, net_divisor)


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
