"""Choosing each bundle's defaults on the validation split, beside two intensity thresholds.

    python -m itermask_evaluation.validation                # every modality → docs/benchmark/validation/
    python -m itermask_evaluation.validation --apply        # and record the choices in the bundles

The manifests (``training/manifests/<modality>.csv``) name each modality's validation scans: labelled, never trained
or calibrated on. Every configuration (bundle × policy) runs once per scan; every segmentation rule is then scored
on the same maps:

- *final mask*: the last iteration's mask itself;
- *policy threshold*: the squared map at the calibrated threshold (IterMask²) or at τ_stop (IterMask3D); for
  IterMask3D also at the healthy-calibrated threshold, and at *released-first p99*: the 99th percentile of the
  final map over the voxels the path released in its first half (a threshold from the subject's own healthy tissue);
- *squared, tuned* and *bright, tuned* (see :mod:`itermask.rules`): that map at the threshold with the best mean
  Dice on the **other** labelled development scans (leave one out: a scan never helps choose its own threshold);
- the anchors: the in-brain z-scored intensity above the bundle's healthy-calibrated k, and above a k tuned the same
  leave-one-out way (what a person tuning an intensity threshold by eye reaches).

The labelled calibration scans (whose healthy tissue calibrated the bundles) help tune thresholds but are not
scored. A modality's default is the IterMask configuration and rule with the best mean Dice over its validation
scans; ``--apply`` writes it into the bundle (``metadata.segmentation``, the threshold now tuned on every
labelled development scan) and names the bundle in ``defaults.json`` beside the bundles.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from itermask import Session, load_model
from itermask._shared import atomic_file, voxel_ml, write_csv
from itermask.bundle import ModelBundle
from itermask.cases import Case, read_case, read_cases
from itermask.discovery import DEFAULTS_FILE, model_directories
from itermask.metadata import SegmentationChoice
from itermask.normalize import iterative_zscore
from itermask.preprocess import brain_mask_or_nonzero
from itermask.rules import reconstruction_error

from .metrics import lesion_detection
from .tables import markdown_table, read_csv

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "training" / "manifests"
MODALITIES = ("flair", "t1ce", "t1", "t2")
# Candidate thresholds: squared normalised-intensity units for the maps, z-scores for the intensity.
THRESHOLDS = {"map": np.geomspace(1e-2, 1e2, 161), "intensity": np.round(np.arange(0.5, 8.0, 0.05), 2)}
# The rules a bundle can record (itermask.rules: a map and a fixed or the policy's threshold); the final mask and the
# released-first threshold are scored for comparison only.
SHIPPABLE = ("policy threshold", "healthy-calibrated", "squared, tuned", "bright, tuned")
RULES = {"squared, tuned": ("squared", "map"), "bright, tuned": ("bright", "map"),
         "intensity, tuned": ("intensity", "intensity")}


@dataclass
class Scan:
    """A labelled development scan: ``scored`` (validation) or used only to tune thresholds (calibration);
    ``cohort``: the data set's folder (``ms_lesjak2017`` marks the small-lesion scans)."""

    name: str
    case: Case
    scored: bool

    @property
    def cohort(self) -> str:
        return self.case.image.parent.parent.name


def development_scans(modality: str, manifests: Path = MANIFESTS) -> list[Scan]:
    cases = read_cases(manifests / f"{modality}.csv")
    return [Scan(c.image.parent.name, c, c.split == "validation") for c in cases
            if c.lesion_mask and c.split in ("validation", "calibration")]


def counts(values: np.ndarray, truth: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(3, T) true positives, false positives and false negatives of ``values > t`` for each threshold ``t``
    (``values``, ``truth``: the brain voxels only).

    >>> counts(np.array([0.1, 0.5, 0.9]), np.array([False, True, True]), np.array([0.3, 0.7])).tolist()
    [[2, 1], [0, 0], [0, 1]]
    """
    lesion, other = np.sort(values[truth]), np.sort(values[~truth])
    tp = len(lesion) - np.searchsorted(lesion, thresholds, side="right")
    fp = len(other) - np.searchsorted(other, thresholds, side="right")
    return np.stack([tp, fp, len(lesion) - tp])


def scores(tp_fp_fn: np.ndarray) -> dict:
    """Dice, sensitivity and precision from counts (nan where undefined)."""
    tp, fp, fn = (float(v) for v in tp_fp_fn)
    ratio = lambda a, b: a / b if b else float("nan")  # noqa: E731
    return {"dice": ratio(2 * tp, 2 * tp + fp + fn), "sensitivity": ratio(tp, tp + fn), "precision": ratio(tp, tp + fp)}


def bundle_key(path: Path) -> str:
    """What a run depends on in a bundle — its weights and calibration — hashed, so that recording a chosen rule in
    the bundle (``--apply``) does not invalidate the cached runs."""
    bundle = load_model(path)
    digest = hashlib.sha1(json.dumps(bundle.calibration.to_json(), sort_keys=True).encode())
    for role in sorted(bundle.networks):
        for tensor in bundle.networks[role].state_dict().values():
            digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:12]


class ScanMaps:
    """One configuration's outputs on one scan, on the input grid, cached in ``cache`` (they cost a full run)."""

    def __init__(self, bundle_path: Path, policy: str, scan: Scan, cache: Path, seed: int = 0):
        self.path = cache / f"{bundle_key(bundle_path)}-{policy}-{scan.name}.npz"
        self.bundle_path, self.policy, self.scan, self.seed = bundle_path, policy, scan, seed

    def load(self) -> dict:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            arrays = self._run()
            with atomic_file(self.path) as handle:
                np.savez(handle, **arrays)
        with np.load(self.path) as stored:
            return dict(stored)

    def _run(self) -> dict:
        bundle = load_model(self.bundle_path)
        volumes = read_case(self.scan.case)
        start = time.perf_counter()
        session = Session(bundle, volumes.image, volumes.affine, volumes.brain, policy=self.policy, seed=self.seed,
                          device="cpu", anomaly="squared")
        session.run()
        prepared, last = session.prepared, session.current
        bright = reconstruction_error(prepared.image, last.reconstruction, prepared.brain, bright=True)
        return {"squared": session.anomaly_map(), "bright": prepared.map_to_input(bright),
                "final_mask": prepared.mask_to_input(last.mask).astype(bool),
                "policy_threshold": session.policy.default_threshold(session),
                "calibrated_threshold": bundle.calibration.threshold,
                "subject_threshold": _released_first_threshold(session),
                "tau_stop_replaced": bool(getattr(session.policy.describe(session).stop, "fallback", None)),
                "seconds": time.perf_counter() - start}


def _released_first_threshold(session: Session, released: float = 0.5, percentile: float = 99.0) -> float:
    """A threshold from the subject itself: the ``percentile`` of the final squared map over the voxels the
    IterMask3D path released in its first ``released`` share of the brain (the ones it reconstructed best, so
    almost surely healthy); nan for a run without a path."""
    path = [it for it in session.iterations if it.phase == "path"]
    if not path:
        return float("nan")
    brain = session.prepared.brain
    reached = next(it for it in path if it.mask.sum() <= (1 - released) * session.brain_voxels)
    healthy = brain & ~reached.mask
    return float(np.percentile(session.current.error[healthy].numpy(), percentile))


def truth_and_brain(scan: Scan) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The label and brain on the input grid, the in-brain z-scored intensity, and the voxel volume in ml."""
    volumes = read_case(scan.case)
    brain = brain_mask_or_nonzero(volumes.image, volumes.brain)
    z = iterative_zscore(torch.from_numpy(volumes.image.astype(np.float32)), torch.from_numpy(brain)).numpy()
    return volumes.lesion & brain, brain, z, voxel_ml(volumes.affine)


def evaluate_modality(modality: str, models: Path, cache: Path, seed: int = 0,
                      manifests: Path = MANIFESTS) -> tuple[list[dict], dict]:
    """Per-scan rows for every configuration × rule and the anchors, and the per-bundle choices (see module doc):
    ``models`` holds ``<modality>-2d.pt`` and ``<modality>-3d.pt``."""
    scans = development_scans(modality, manifests)
    bundles = {dims: models / f"{modality}-{dims}d.pt" for dims in (2, 3)}
    configurations = [(bundles[2], "itermask2"), (bundles[3], "itermask3d")]
    healthy_k = load_model(bundles[3]).calibration.intensity_threshold
    curves, fixed, info = {}, {}, {}  # (configuration label, rule) → scan → counts
    for scan in scans:
        truth, brain, z, voxel_ml = truth_and_brain(scan)
        lesion = truth[brain]
        info[scan.name] = {"lesion_ml": truth.sum() * voxel_ml, "voxel_ml": voxel_ml, "scored": scan.scored}
        curves.setdefault(("intensity", "intensity, tuned"), {})[scan.name] = \
            counts(z[brain], lesion, THRESHOLDS["intensity"])
        fixed.setdefault(("intensity", "intensity, healthy-calibrated"), {})[scan.name] = \
            (counts(z[brain], lesion, np.array([healthy_k]))[:, 0], healthy_k)
        for path, policy in configurations:
            maps = ScanMaps(path, policy, scan, cache, seed).load()
            label = f"{path.stem} {policy}"
            info[scan.name][label] = float(maps["seconds"])
            for rule in ("squared, tuned", "bright, tuned"):
                curves.setdefault((label, rule), {})[scan.name] = \
                    counts(maps[RULES[rule][0]][brain], lesion, THRESHOLDS["map"])
            named = {"policy threshold": maps["policy_threshold"]}
            if policy == "itermask3d":  # IterMask²'s policy threshold is the calibrated one already
                named.update({"healthy-calibrated": maps["calibrated_threshold"],
                              "released-first p99": maps["subject_threshold"]})
            for rule, threshold in named.items():
                fixed.setdefault((label, rule), {})[scan.name] = \
                    (counts(maps["squared"][brain], lesion, np.array([float(threshold)]))[:, 0], float(threshold))
            # The final mask as a 0/1 map above one half: the same counts as every other rule.
            fixed.setdefault((label, "final mask"), {})[scan.name] = \
                (counts(maps["final_mask"][brain].astype(np.float32), lesion, np.array([0.5]))[:, 0], None)
    rows = _rows(modality, curves, fixed, info)
    return rows, _choices(modality, rows, curves, bundles)


def _tuned_index(curve_by_scan: dict, tuning: list[str]) -> int:
    """The threshold index with the best mean Dice over the ``tuning`` scans."""
    dice = [2 * c[0] / np.maximum(2 * c[0] + c[1] + c[2], 1) for name, c in curve_by_scan.items() if name in tuning]
    return int(np.argmax(np.mean(dice, axis=0)))


def shipped_threshold(curve_by_scan: dict) -> float | None:
    """The map threshold with the best mean Dice over every scan of ``curve_by_scan`` (name → (3, thresholds)
    counts tp, fp, fn along ``THRESHOLDS["map"]``), or None when it is an end of that search: then no threshold in
    it separated lesion from tissue. The lowest flags nearly every voxel the reconstruction missed at all, and
    wins on Dice only when lesions are large (t1-2d's ``bright`` rule segmented 550–910 ml of 8–168 ml lesions).

    >>> n = len(THRESHOLDS["map"])
    >>> best_in_the_middle = np.stack([np.full(n, 50.0), 100.0 * (np.arange(n) != n // 2), np.zeros(n)])
    >>> lower_is_better_to_the_end = np.stack([np.linspace(50, 0, n), np.zeros(n), np.linspace(0, 50, n)])
    >>> round(shipped_threshold({"a": best_in_the_middle}), 3), shipped_threshold({"a": lower_is_better_to_the_end})
    (1.0, None)
    """
    index = _tuned_index(curve_by_scan, list(curve_by_scan))
    return None if index in (0, len(THRESHOLDS["map"]) - 1) else float(THRESHOLDS["map"][index])


def _rows(modality: str, curves: dict, fixed: dict, info: dict) -> list[dict]:
    rows = []
    tuning = list(info)
    scored = [name for name in tuning if info[name]["scored"]]
    for (label, rule), by_scan in curves.items():
        grid = THRESHOLDS[RULES[rule][1]]
        for name in scored:
            others = [t for t in tuning if t != name]
            if not others:
                continue  # nothing else to tune on: no honest figure exists
            i = _tuned_index(by_scan, others)
            rows.append(_row(modality, name, label, rule, by_scan[name][:, i], float(grid[i]), info))
    for (label, rule), by_scan in fixed.items():
        rows += [_row(modality, name, label, rule, *by_scan[name], info) for name in scored]
    return rows


def _row(modality, name, label, rule, tp_fp_fn, threshold, info) -> dict:
    seconds = info[name].get(label)
    return {"modality": modality.upper(), "scan": name, "configuration": label, "rule": rule,
            "threshold": threshold, **scores(tp_fp_fn),
            "segmented_ml": float(tp_fp_fn[0] + tp_fp_fn[1]) * info[name]["voxel_ml"],
            "lesion_ml": float(info[name]["lesion_ml"]), "seconds": seconds}


def mean_table(rows: list[dict]) -> list[dict]:
    """Mean Dice (and s / scan) of each configuration × rule over its scans, best first."""
    groups = {}
    for r in rows:
        groups.setdefault((r["modality"], r["configuration"], r["rule"]), []).append(r)
    out = [{"modality": m, "configuration": c, "rule": rule, "scans": len(g),
            "dice": float(np.nanmean([r["dice"] for r in g])),
            "segmented_ml": float(np.mean([r["segmented_ml"] for r in g])),
            "lesion_ml": float(np.mean([r["lesion_ml"] for r in g])),
            "seconds": float(np.mean([r["seconds"] for r in g])) if g[0]["seconds"] is not None else None}
           for (m, c, rule), g in groups.items()]
    return sorted(out, key=lambda r: (r["modality"], -np.nan_to_num(r["dice"], nan=-1)))


def _choices(modality: str, rows: list[dict], curves: dict, bundles: dict) -> dict:
    """For each bundle its best policy and rule; the modality's default is the best of them. A tuned threshold is
    re-tuned on every labelled development scan for shipping, and a rule whose threshold lands on an end of the
    search is passed over (see :func:`shipped_threshold`)."""
    means = [m for m in mean_table(rows) if m["configuration"] != "intensity" and m["rule"] in SHIPPABLE]
    choice = {"bundles": {}}
    for m in means:  # best first
        name, policy = m["configuration"].split()
        if name in choice["bundles"]:
            continue
        rule = m["rule"]
        threshold = None
        if rule in RULES:
            threshold = shipped_threshold(curves[(m["configuration"], rule)])
            if threshold is None:
                continue
        elif rule == "healthy-calibrated":
            path = next(p for p in bundles.values() if p.stem == name)
            threshold = float(load_model(path).calibration.threshold)
        anomaly = RULES[rule][0] if rule in RULES else "squared"
        choice["bundles"][name] = {"policy": policy, "anomaly": anomaly, "threshold": threshold, "rule": rule,
                                   "validation_dice": round(m["dice"], 4), "validation_scans": m["scans"]}
        choice.setdefault("default", name)
    return choice


def small_lesion_detection(modality: str, rows: list[dict], choice: dict, models: Path, cache: Path,
                           seed: int = 0) -> list[dict]:
    """Lesion-wise detection on the MS scans (lesions of 1–50 ml): the modality's default and the two intensity
    anchors, each at the threshold its row was scored with (leave one out for the tuned ones)."""
    default = choice["bundles"][choice["default"]]
    wanted = {(f"{choice['default']} {default['policy']}", default["rule"]), ("intensity", "intensity, tuned"),
              ("intensity", "intensity, healthy-calibrated")}
    out = []
    for scan in development_scans(modality):
        if not (scan.scored and scan.cohort.startswith("ms")):
            continue
        truth, brain, z, _ = truth_and_brain(scan)
        for row in rows:
            if (row["modality"], row["scan"]) != (modality.upper(), scan.name) or \
                    (row["configuration"], row["rule"]) not in wanted:
                continue
            if row["configuration"] == "intensity":
                predicted = z > row["threshold"]
            else:
                maps = ScanMaps(models / f"{choice['default']}.pt", default["policy"], scan, cache, seed).load()
                predicted = maps["final_mask"] if row["rule"] == "final mask" else \
                    maps[RULES.get(row["rule"], ("squared",))[0]] > row["threshold"]
            out.append({"modality": modality.upper(), "scan": scan.name, "configuration": row["configuration"],
                        "rule": row["rule"], "dice": row["dice"], **lesion_detection(predicted & brain, truth)})
    return out


def apply(choices: dict, models: Path) -> None:
    """Record each bundle's chosen policy and rule in it, and each modality's default bundle in ``defaults.json``."""
    defaults_path = models / DEFAULTS_FILE
    defaults = json.loads(defaults_path.read_text()) if defaults_path.exists() else {}
    for modality, choice in choices.items():
        for name, chosen in choice["bundles"].items():
            path = models / f"{name}.pt"
            bundle = ModelBundle.load(path)
            source = ("tuned for the best mean Dice on the labelled development scans "
                      f"({chosen['validation_scans']} validation + labelled calibration scans)"
                      if chosen["threshold"] is not None else "the policy's own")
            segmentation = SegmentationChoice(**chosen, source=source, chosen_by="itermask_evaluation.validation")
            bundle.metadata = replace(bundle.metadata, segmentation=segmentation,
                                      policy=replace(bundle.metadata.policy, default=chosen["policy"]))
            bundle.save(path)
        defaults[modality.upper()] = choice["default"]
    defaults_path.write_text(json.dumps(defaults, indent=1) + "\n")


def run(out: Path, seed: int = 0, models: Path | None = None, cache: Path = REPO.parent / "runs" / "validation-cache",
        modalities=MODALITIES) -> dict:
    """Evaluate ``modalities``, write ``results.csv`` (per scan), ``means.csv``, ``choices.json`` and
    ``ms_detection.csv`` into ``out``; returns the choices."""
    models = models or model_directories()[0]
    out.mkdir(parents=True, exist_ok=True)
    all_rows, choices = [], {}
    for modality in modalities:
        rows, choices[modality] = evaluate_modality(modality, models, cache, seed)
        all_rows += rows
    write_csv(out / "results.csv", all_rows)
    write_csv(out / "means.csv", mean_table(all_rows))
    (out / "choices.json").write_text(json.dumps(choices, indent=1) + "\n")
    detection = [row for modality in choices
                 for row in small_lesion_detection(modality, all_rows, choices[modality], models, cache, seed)]
    if detection:
        write_csv(out / "ms_detection.csv", detection)
    return choices


def report_markdown(folder: Path) -> str:
    """The validation's tables for BENCHMARK.md: mean Dice per modality, then every scan, then MS detection."""
    if not (folder / "means.csv").exists():
        return "(not run)"
    choices = json.loads((folder / "choices.json").read_text())
    means, rows = read_csv(folder / "means.csv"), read_csv(folder / "results.csv")
    parts = []
    for modality in choices:
        mine = [m for m in means if m["modality"] == modality.upper()]
        default = choices[modality]["default"]
        parts.append(f"### {modality.upper()}: mean over {int(mine[0]['scans'])} validation scans "
                     f"(default: `{default}`, {choices[modality]['bundles'][default]['policy']}, "
                     f"{choices[modality]['bundles'][default]['rule']})\n\n" + markdown_table(mine))
    wide = [{k: r[k] for k in ("modality", "scan", "configuration", "rule", "threshold", "dice", "sensitivity",
                               "precision", "segmented_ml", "lesion_ml")} for r in rows]
    parts.append("### Every validation scan\n\n" + markdown_table(wide))
    if (folder / "ms_detection.csv").exists():
        parts.append("### MS lesions, lesion by lesion (26-connected)\n\n" +
                     markdown_table(read_csv(folder / "ms_detection.csv")))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "benchmark" / "validation")
    parser.add_argument("--models", type=Path, help="folder of <modality>-2d.pt and -3d.pt (default: the shipped)")
    parser.add_argument("--cache", type=Path, default=REPO.parent / "runs" / "validation-cache",
                        help="where each configuration's maps per scan are kept (each costs a full run)")
    parser.add_argument("--modality", action="append", choices=MODALITIES)
    parser.add_argument("--apply", action="store_true", help="record the choices in the bundles and defaults.json")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    models = args.models or model_directories()[0]
    choices = run(args.output, args.seed, models, args.cache, args.modality or MODALITIES)
    print(report_markdown(args.output))
    print(f"{(time.perf_counter() - start) / 60:.1f} min; wrote {args.output}")
    if args.apply:
        apply(choices, models)
        print(f"recorded the choices in the bundles in {models}")


if __name__ == "__main__":
    main()
