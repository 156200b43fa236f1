"""Finding model bundles and reading their metadata without importing torch.

Slicer lists the models, and selects each bundle's default policy, before torch is installed; the model itself is
only ever loaded in the worker process. A bundle is a ``torch.save`` zip archive whose pickle holds the metadata as
a JSON string beside the weights: a restricted unpickler reads it and turns every tensor into ``None`` (it builds
nothing but plain containers and runs no code from the file).
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

from .errors import ItermaskError
from .metadata import BundleMetadata, check_modality

BUNDLE_SUFFIX = ".pt"
DEFAULTS_FILE = "defaults.json"   # modality → the bundle its validation chose, beside the bundles


def model_directories() -> list[Path]:
    """Where bundled and user models are looked up, first match wins.

    ``$ITERMASK_MODEL_PATH`` (os.pathsep-separated), then the module's ``Resources/Models`` (Slicer and source
    checkouts), then the installed ``itermask_models`` package (``pip install``).
    """
    dirs = [Path(p) for p in os.environ.get("ITERMASK_MODEL_PATH", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parent.parent / "Resources" / "Models")
    try:
        import itermask_models

        dirs.append(Path(itermask_models.__file__).parent)
    except ImportError:
        pass
    return [d for d in dirs if d.is_dir()]


def available_models() -> dict[str, Path]:
    """Bundled model names (file stems) → files."""
    found: dict[str, Path] = {}
    for directory in model_directories():
        for file in sorted(directory.glob("*" + BUNDLE_SUFFIX)):
            found.setdefault(file.stem, file)
    return found


class _MetadataOnly(pickle.Unpickler):
    """Unpickles torch's ``data.pkl`` with every tensor (storage and rebuild call) replaced by ``None``."""

    _CONTAINERS = {("collections", "OrderedDict")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._CONTAINERS:
            return super().find_class(module, name)
        if module.split(".")[0] == "torch":
            return _nothing
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a model bundle")

    def persistent_load(self, pid):
        return None


def _nothing(*args, **kwargs):
    return None


def read_metadata(path: str | os.PathLike) -> BundleMetadata:
    """A bundle's metadata (name, modality, dims, policy, calibration, …) without loading its weights or torch."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            with archive.open(pickled) as stream:
                raw = _MetadataOnly(stream).load()
        text = raw["itermask_bundle"]
    except (OSError, StopIteration, zipfile.BadZipFile, pickle.UnpicklingError, KeyError, TypeError, ValueError,
            EOFError):
        raise ItermaskError(f"{path} is not a readable IterMask model bundle") from None
    return parse_metadata(text, path)


def parse_metadata(text: str, path: str | os.PathLike) -> BundleMetadata:
    """The JSON metadata of the bundle file at ``path``, checked and typed; any problem is an error naming the file."""
    try:
        data = json.loads(text)
    except (TypeError, ValueError):
        raise ItermaskError(f"{path}: the bundle metadata is not valid JSON") from None
    try:
        return BundleMetadata.from_json(data)
    except ItermaskError as exc:
        raise ItermaskError(f"{path}: {exc}") from None


def default_model_name(modality: str, dims: int | None = None) -> str:
    """The bundled model for a modality: ``<modality>-<dims>d`` in lower case, e.g. ``flair-2d``; with ``dims`` None,
    the one the validation chose for that modality (``defaults.json`` in a model folder), else the 2D one. A modality
    the validation found no model for is an error saying so (:func:`validated_default`)."""
    modality = check_modality(modality)
    if dims is None:
        name, message = validated_default(modality)
        if name is None:
            raise ItermaskError(message)
    else:
        name = f"{modality.lower()}-{dims}d"
    if name not in available_models():
        have = ", ".join(sorted(available_models())) or "none installed"
        raise ItermaskError(f"no bundled model {name} for modality {modality} (available: {have}); pass --model")
    return name


def validated_default(modality: str) -> tuple[str | None, str]:
    """The model a user of ``modality`` gets without choosing one, and one line about it for a person to read.

    ``(name, line)``: the bundle the validation chose (``defaults.json``), or ``<modality>-2d`` where no model folder
    records a choice; ``(None, line)`` where the validation recorded that no model kept healthy brains within its
    bound: the line says so and what ``--model NAME`` would give instead (its validation Dice and false-positive
    ml on healthy brains, from the bundle's metadata). Reads no weights and needs no torch: the Slicer module and
    the web page call it to fill their model choice.
    """
    modality = check_modality(modality)
    chosen = _chosen_defaults()
    if modality not in chosen:
        return f"{modality.lower()}-2d", f"{modality.lower()}-2d (no validation recorded a default)"
    name = chosen[modality]
    if name is not None:
        rule = _segmentation_of(name)
        said = f" (validation Dice {rule.validation_dice:.2f})" if rule and rule.validation_dice is not None else ""
        return name, f"{name}: the validated default for {modality}{said}"
    line = (f"no validated model for {modality}: on the validation split none both beat an intensity threshold and "
            f"left healthy brains (nearly) alone")
    candidates = [(n, r) for n in available_models() if n.startswith(modality.lower() + "-")
                  and (r := _segmentation_of(n)) is not None and r.validation_dice is not None]
    if candidates:
        name, rule = max(candidates, key=lambda c: c[1].validation_dice)
        fp = (f", {rule.healthy_fp_ml_median:.0f} ml median / {rule.healthy_fp_ml_max:.0f} ml most on "
              f"{rule.healthy_scans}" if rule.healthy_fp_ml_max is not None else "")
        line += f"; --model {name} gives validation Dice {rule.validation_dice:.2f}{fp}"
    return None, line


def _segmentation_of(name: str):
    """The segmentation rule recorded in bundle ``name`` (None when it records none or cannot be read)."""
    path = available_models().get(name)
    try:
        return read_metadata(path).segmentation if path else None
    except ItermaskError:
        return None


def _chosen_defaults() -> dict[str, str | None]:
    """The first ``defaults.json`` found along :func:`model_directories` (modality → bundle name, or None where the
    validation found none), or nothing."""
    for directory in model_directories():
        path = directory / DEFAULTS_FILE
        if path.is_file():
            try:
                chosen = dict(json.loads(path.read_text()))
            except (ValueError, TypeError):
                chosen = None
            if chosen is None or not all(v is None or isinstance(v, str) for v in chosen.values()):
                raise ItermaskError(f"{path} is not a JSON object of modality → model name (or null)")
            return chosen
    return {}
