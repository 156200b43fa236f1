"""Choosing each bundle's defaults on the validation split, beside two intensity thresholds, with healthy brains.

    python -m itermask_evaluation.validation                    # every sequence → docs/benchmark/validation/
    python -m itermask_evaluation.validation --modality t1      # one sequence; the combined tables are rebuilt
    python -m itermask_evaluation.validation --no-run --apply   # record the choices in the bundles, defaults.json

Which scans are validation, labelled calibration, held-out test and healthy is :mod:`.splits`'s. Every
configuration (bundle × policy) runs once per scan; every segmentation rule is then scored on the same maps:

- *final mask*: the last iteration's mask itself;
- *policy threshold*: the squared map at the calibrated threshold (IterMask²) or at τ_stop (IterMask3D); for
  IterMask3D also at the healthy-calibrated threshold, and at *released-first p99*: the 99th percentile of the
  final map over the voxels the path released in its first half (a threshold from the subject's own healthy tissue);
- *squared*, *bright* and (T1) *dark, tuned* (see :mod:`itermask.rules`): that map at the threshold with the best
  mean Dice on the **other** labelled development scans (leave one out: a scan never helps choose its own threshold);
- the anchors: the in-brain z-scored intensity above the bundle's healthy-calibrated k, and above a k tuned the same
  leave-one-out way (what a person tuning an intensity threshold by eye reaches);

each also with every clean-up of :data:`POSTS` (:mod:`itermask.postprocess`), its threshold tuned with the clean-up
in place. Healthy scans and held-out scans are scored at the threshold tuned on every labelled development scan.
A sequence's default is the bundle rule with the best mean validation Dice among those that leave at most
:data:`HEALTHY_MEDIAN_ML` (median) and :data:`HEALTHY_MAX_ML` (any scan) of false positives in healthy brains,
if it beats the plain intensity thresholds'; else the sequence has no default (``defaults.json`` records null). ``--apply`` writes each bundle's
choice into it (``metadata.segmentation``) and the defaults into ``defaults.json`` beside the bundles.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from itermask import Session, load_model
from itermask._shared import atomic_file, voxel_ml, voxel_spacing, write_csv
from itermask.bundle import ModelBundle
from itermask.discovery import DEFAULTS_FILE, model_directories, read_metadata
from itermask.metadata import SegmentationChoice
from itermask.normalize import iterative_zscore
from itermask.postprocess import PostProcess, inner_brain, median_filtered
from itermask.preprocess import brain_mask_or_nonzero
from itermask.rules import hyperintense_voxels, only_hyperintense, reconstruction_error

from .metrics import lesion_detection
from .splits import REPO, Scan, scans_of
from .tables import markdown_table, read_csv

MODALITIES = ("flair", "t1ce", "t1", "t2")
# Candidate thresholds: squared normalised-intensity units for the maps, z-scores for the intensity.
THRESHOLDS = {"map": np.geomspace(1e-2, 1e2, 161), "intensity": np.round(np.arange(0.5, 8.0, 0.05), 2)}
# The rules a bundle can record (itermask.rules: a map and a fixed or the policy's threshold); the final mask and the
# released-first threshold are scored for comparison only.
SHIPPABLE = ("policy threshold", "healthy-calibrated", "squared, tuned", "bright, tuned", "dark, tuned",
             "hyperintense, tuned")
RULES = {"squared, tuned": ("squared", "map"), "bright, tuned": ("bright", "map"), "dark, tuned": ("dark", "map"),
         "hyperintense, tuned": ("hyperintense", "map"), "intensity, tuned": ("intensity", "intensity")}
# The maps tried per sequence: T1 lesions are mostly darker than tissue (the ``dark`` side), the others brighter;
# on FLAIR also the bright residual where the scan itself is hyper-intense (small MS lesions).
MAPS = {"flair": ("squared", "bright", "hyperintense"), "t1ce": ("squared", "bright"),
        "t1": ("squared", "bright", "dark"), "t2": ("squared", "bright")}


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
        volumes = self.scan.read()
        start = time.perf_counter()
        session = Session(bundle, volumes.image, volumes.affine, volumes.brain, policy=self.policy, seed=self.seed,
                          device="cpu", anomaly="squared")
        session.run()
        prepared, last = session.prepared, session.current
        bright = reconstruction_error(prepared.image, last.reconstruction, prepared.brain, side="bright")
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


# The clean-ups tried (itermask.postprocess): each alone, and together. Cluster counting is what costs: two of them.
POSTS = (PostProcess(), PostProcess(median=True), PostProcess(rim_mm=3.0), PostProcess(min_component_ml=0.05),
         PostProcess(median=True, rim_mm=3.0), PostProcess(median=True, rim_mm=3.0, min_component_ml=0.05))
CC_EVERY = 8           # clusters are counted at every 8th candidate threshold (a factor of 1.6): labelling is slow
CC_MAX_SHARE = 0.1     # … and only where less than this share of the brain is segmented (above: as without)
HEALTHY_MEDIAN_ML, HEALTHY_MAX_ML = 10.0, 25.0   # the bound a default must keep on healthy brains


@dataclass
class ScanData:
    """A scan cropped to its brain's bounding box (one voxel of margin): label (all False for a healthy scan),
    brain, in-brain z-scored intensity, voxel size (mm) and volume (ml)."""

    scan: Scan
    box: tuple
    truth: np.ndarray
    brain: np.ndarray
    z: np.ndarray
    spacing: tuple
    voxel_ml: float

    @property
    def lesion_ml(self) -> float:
        return float(self.truth.sum()) * self.voxel_ml

    @functools.cached_property
    def regions(self) -> dict:
        """The brain without each clean-up's rim (rim_mm → bool array): computed once per scan."""
        return {rim: inner_brain(self.brain, rim, self.spacing) for rim in {p.rim_mm for p in POSTS}}


def scan_data(scan: Scan) -> ScanData:
    volumes = scan.read()
    brain = brain_mask_or_nonzero(volumes.image, volumes.brain)
    z = iterative_zscore(torch.from_numpy(volumes.image.astype(np.float32)), torch.from_numpy(brain)).numpy()
    truth = volumes.lesion if volumes.lesion is not None else np.zeros(brain.shape, bool)
    box = tuple(slice(max(i.min() - 1, 0), i.max() + 2) for i in np.nonzero(brain))
    return ScanData(scan, box, (truth & brain)[box], brain[box], z[box], voxel_spacing(volumes.affine),
                    voxel_ml(volumes.affine))


def post_counts(values: np.ndarray, data: ScanData, post: PostProcess, thresholds: np.ndarray) -> np.ndarray:
    """(3, T) counts of :func:`counts` for ``post`` applied to ``values > t`` (``values`` already median-filtered
    if ``post`` says so); with a smallest cluster, nan except at every :data:`CC_EVERY`-th threshold."""
    region = data.regions[post.rim_mm]
    inside = np.where(region, values, -np.inf)[data.brain]
    plain = counts(inside, data.truth[data.brain], thresholds).astype(float)
    if not post.min_component_ml:
        return plain
    out = np.full_like(plain, np.nan)
    smallest = post.min_component_ml / data.voxel_ml
    lesion = int(data.truth.sum())
    for i in range(0, len(thresholds), CC_EVERY):
        if plain[0, i] + plain[1, i] > CC_MAX_SHARE * data.brain.sum():
            out[:, i] = plain[:, i]  # so much is segmented that dropping specks changes little: not counted
            continue
        keep = _large_clusters(region & (values > thresholds[i]), smallest)
        tp = int((keep & data.truth).sum())
        out[:, i] = (tp, int(keep.sum()) - tp, lesion - tp)
    return out


def named_maps(maps: dict, data: ScanData, bundle_path: Path) -> dict:
    """One run's input-grid maps (:class:`ScanMaps`) in ``data``'s box, by the name a rule segments
    (:data:`itermask.rules.ANOMALY_MAPS`), as ``Session.anomaly_map`` makes them; ``hyperintense`` only where the
    bundle has a healthy-calibrated intensity threshold."""
    squared, bright = maps["squared"][data.box], maps["bright"][data.box]
    named = {"squared": squared, "bright": bright, "dark": squared - bright}
    intensity_threshold = read_metadata(bundle_path).calibration.intensity_threshold  # not the weights
    if intensity_threshold is not None:
        named["hyperintense"] = only_hyperintense(bright, hyperintense_voxels(data.z, intensity_threshold))
    return named


def _scan_sources(modality: str, data: ScanData, configurations, cache: Path, seed: int, healthy_k: float):
    """For one scan: ``(configuration, rule) → (map, threshold or None for tuned)`` and the fixed final masks."""
    sources = {("intensity", "intensity, tuned"): ("intensity", data.z, None),
               ("intensity", "intensity, healthy-calibrated"): ("intensity", data.z, healthy_k)}
    seconds, final = {}, {}
    for path, policy in configurations:
        maps = ScanMaps(path, policy, data.scan, cache, seed).load()
        label = f"{path.stem} {policy}"
        seconds[label] = float(maps["seconds"])
        named = named_maps(maps, data, path)
        squared = named["squared"]
        for anomaly in MAPS[modality]:
            sources[(label, f"{anomaly}, tuned")] = (anomaly, named[anomaly], None)
        sources[(label, "policy threshold")] = ("squared", squared, float(maps["policy_threshold"]))
        if policy == "itermask3d":  # IterMask²'s policy threshold is the calibrated one already
            sources[(label, "healthy-calibrated")] = ("squared", squared, float(maps["calibrated_threshold"]))
            sources[(label, "released-first p99")] = ("squared", squared, float(maps["subject_threshold"]))
        final[label] = maps["final_mask"][data.box]
    return sources, final, seconds


def evaluate_modality(modality: str, models: Path, cache: Path, seed: int = 0,
                      scans: list[Scan] | None = None) -> tuple[list[dict], dict, dict]:
    """Per-scan rows for every configuration × rule × clean-up (validation, test and healthy scans), the per-bundle
    choices, and what is known of each scan (see module doc); ``models`` holds ``<modality>-2d.pt`` and
    ``<modality>-3d.pt``; ``scans``: default :func:`~.splits.scans_of` the modality."""
    bundles = {dims: models / f"{modality}-{dims}d.pt" for dims in (2, 3)}
    configurations = [(bundles[2], "itermask2"), (bundles[3], "itermask3d")]
    healthy_k = load_model(bundles[3]).calibration.intensity_threshold
    curves, info = {}, {}  # (configuration, rule, post) → scan → ((3, T) counts, thresholds)
    scans = scans_of(modality) if scans is None else scans
    for scan in scans:
        if scan.role == "test":
            continue  # scored below, only with what the validation chose
        print(f"{modality} {scan.name} ({scan.role})", flush=True)
        data = scan_data(scan)
        sources, final, seconds = _scan_sources(modality, data, configurations, cache, seed, healthy_k)
        info[scan.name] = {"role": scan.role, "cohort": scan.cohort, "lesion_ml": data.lesion_ml,
                           "voxel_ml": data.voxel_ml, **seconds}
        filtered = {}
        for (label, rule), (anomaly, values, threshold) in sources.items():
            grid = THRESHOLDS["intensity" if label == "intensity" else "map"] if threshold is None \
                else np.array([threshold])
            for post in POSTS:
                key = (label, anomaly, post.median)
                if post.median and key not in filtered:
                    filtered[key] = median_filtered(values, data.spacing)
                shown = filtered[key] if post.median else values
                found = post_counts(shown, data, post, grid) if threshold is None or not post.min_component_ml \
                    else _fixed_cc_counts(shown, data, post, grid)
                curves.setdefault((label, rule, post), {})[scan.name] = (found, grid)
        for label, mask in final.items():
            curves.setdefault((label, "final mask", PostProcess()), {})[scan.name] = \
                (counts(mask[data.brain].astype(np.float32), data.truth[data.brain], np.array([0.5])), None)
    rows = _rows(modality, curves, info)
    choice = _choices(modality, rows, curves, info, bundles)
    rows += _test_rows(modality, [s for s in scans if s.role == "test"], _picked(modality, rows, choice, curves, info),
                       info, models, cache, seed)
    return rows, choice, info


def _picked(modality: str, rows: list[dict], choice: dict, curves: dict, info: dict) -> list[tuple]:
    """What the held-out scans are scored with: the best intensity threshold, and the default (or, without one,
    each bundle's recorded rule), each as (configuration, rule, clean-up, threshold or None for the policy's own),
    thresholds tuned on every labelled development scan."""
    posts = {p.describe(): p for p in POSTS}
    tuning = [n for n, i in info.items() if i["role"] in ("validation", "calibration")]
    best = next(m for m in mean_table(rows) if m["configuration"] == "intensity")
    by_scan = curves[("intensity", best["rule"], posts[best["post"]])]
    grid = next(iter(by_scan.values()))[1]
    picked = [("intensity", best["rule"], posts[best["post"]], float(grid[_tuned_index(by_scan, tuning)]))]
    for name, chosen in choice["bundles"].items():
        if choice["default"] in (None, name):
            picked.append((f"{name} {chosen['policy']}", chosen["rule"], _post_of(chosen), chosen["threshold"]))
    return picked


def _test_rows(modality: str, scans: list[Scan], picked: list[tuple], info: dict, models: Path, cache: Path,
               seed: int) -> list[dict]:
    """Rows for the held-out ``scans``, each scored with every ``picked`` rule (see :func:`_picked`)."""
    rows = []
    for scan in scans:
        data = scan_data(scan)
        info[scan.name] = {"role": scan.role, "cohort": scan.cohort, "lesion_ml": data.lesion_ml,
                           "voxel_ml": data.voxel_ml}
        for label, rule, post, threshold in picked:
            if label == "intensity":
                values = data.z
            else:
                name, policy = label.split()
                maps = ScanMaps(models / f"{name}.pt", policy, scan, cache, seed).load()
                info[scan.name][label] = float(maps["seconds"])
                values = named_maps(maps, data, models / f"{name}.pt")[RULES.get(rule, ("squared",))[0]]
                threshold = float(maps["policy_threshold"]) if threshold is None else threshold
            mask = post.segment(values, threshold, data.brain, data.spacing)
            tp = int((mask & data.truth).sum())
            found = np.array([tp, int(mask.sum()) - tp, int(data.truth.sum()) - tp])
            rows.append(_row(modality, scan.name, label, rule, post, found, threshold, info))
    return rows


def _large_clusters(mask: np.ndarray, smallest: float) -> np.ndarray:
    """``mask`` without its 26-connected clusters of fewer than ``smallest`` voxels: what
    :func:`itermask.postprocess.without_small_components` gives (``Testing/test_postprocess.py`` checks they agree),
    by scipy's labelling, which is much faster for the thousands of masks a sweep counts."""
    clusters, _ = ndimage.label(mask, np.ones((3, 3, 3), bool))
    return (np.bincount(clusters.ravel()) >= smallest)[clusters] & (clusters > 0)


def _fixed_cc_counts(values, data, post, grid) -> np.ndarray:
    """Counts at a single fixed threshold with clusters removed (``values`` already median-filtered if ``post``
    says so)."""
    mask = _large_clusters(data.regions[post.rim_mm] & (values > grid[0]), post.min_component_ml / data.voxel_ml)
    tp = int((mask & data.truth).sum())
    return np.array([[tp], [int(mask.sum()) - tp], [int(data.truth.sum()) - tp]], float)


def _dice(c: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isnan(c[0]), np.nan, 2 * c[0] / np.maximum(2 * c[0] + c[1] + c[2], 1))


def _tuned_index(curve_by_scan: dict, tuning: list[str]) -> int:
    """The threshold index with the best mean Dice over the ``tuning`` scans (thresholds not evaluated for every
    one of them are never chosen)."""
    dice = np.mean([_dice(curve_by_scan[name][0]) for name in tuning], axis=0)
    return int(np.nanargmax(np.where(np.isnan(dice), -1.0, dice)))


def shipped_threshold(curve_by_scan: dict, tuning: list[str] | None = None) -> float | None:
    """The map threshold with the best mean Dice over the ``tuning`` scans of ``curve_by_scan`` (name → ((3, T)
    counts tp, fp, fn along ``THRESHOLDS["map"]``, thresholds); default all), or None when it is an end of that
    search: then no threshold in it separated lesion from tissue. The lowest flags nearly every voxel the
    reconstruction missed at all, and wins on Dice only when lesions are large (t1-2d's ``bright`` rule segmented
    550–910 ml of 8–168 ml lesions).

    >>> n, grid = len(THRESHOLDS["map"]), THRESHOLDS["map"]
    >>> best_in_the_middle = np.stack([np.full(n, 50.0), 100.0 * (np.arange(n) != n // 2), np.zeros(n)])
    >>> lower_is_better_to_the_end = np.stack([np.linspace(50, 0, n), np.zeros(n), np.linspace(0, 50, n)])
    >>> round(shipped_threshold({"a": (best_in_the_middle, grid)}), 3)
    1.0
    >>> shipped_threshold({"a": (lower_is_better_to_the_end, grid)}) is None
    True
    """
    index = _tuned_index(curve_by_scan, tuning or list(curve_by_scan))
    grid = next(iter(curve_by_scan.values()))[1]
    return None if index in (0, len(grid) - 1) else float(grid[index])


def _rows(modality: str, curves: dict, info: dict) -> list[dict]:
    """One row per (configuration, rule, clean-up) and scored scan: validation scans at a threshold tuned on the
    other labelled development scans, test and healthy scans at the threshold tuned on all of them."""
    rows = []
    tuning = [n for n, i in info.items() if i["role"] in ("validation", "calibration")]
    for (label, rule, post), by_scan in curves.items():
        grid = next(iter(by_scan.values()))[1]
        tuned = len(grid) > 1 if grid is not None else False
        for name, (found, _) in by_scan.items():
            role = info[name]["role"]
            if role == "calibration":
                continue
            if tuned:
                others = [t for t in tuning if t != name] if role == "validation" else tuning
                if not others:
                    continue  # nothing else to tune on: no honest figure exists
                i = _tuned_index(by_scan, others)
                if np.isnan(found[0, i]):
                    continue
                rows.append(_row(modality, name, label, rule, post, found[:, i], float(grid[i]), info))
            else:
                rows.append(_row(modality, name, label, rule, post, found[:, 0],
                                 None if grid is None else float(grid[0]), info))
    return rows


def _row(modality, name, label, rule, post, tp_fp_fn, threshold, info) -> dict:
    ml = info[name]["voxel_ml"]
    return {"modality": modality.upper(), "scan": name, "role": info[name]["role"], "configuration": label,
            "rule": rule, "post": post.describe(), "threshold": threshold, **scores(tp_fp_fn),
            "segmented_ml": float(tp_fp_fn[0] + tp_fp_fn[1]) * ml, "false_positive_ml": float(tp_fp_fn[1]) * ml,
            "lesion_ml": float(info[name]["lesion_ml"]), "seconds": info[name].get(label)}


def mean_table(rows: list[dict]) -> list[dict]:
    """Per configuration × rule × clean-up: mean Dice over the validation scans, the false-positive ml on healthy
    brains (median and largest; where a sequence has no healthy scan, on the lesion-free tissue of its validation
    MS patients, ``healthy_fp_on`` says which), the mean Dice on the held-out test scans, best Dice first."""
    groups = {}
    for r in rows:
        groups.setdefault((r["modality"], r["configuration"], r["rule"], r["post"]), []).append(r)
    out = []
    for (m, c, rule, post), g in groups.items():
        validation = [r for r in g if r["role"] == "validation"]
        if not validation:
            continue
        healthy = [r for r in g if r["role"] == "healthy"]
        proxy = not healthy
        fp = [r["false_positive_ml"] for r in (healthy or [r for r in validation if r["scan"].startswith(("ms", "patient"))])]
        test = [r["dice"] for r in g if r["role"] == "test"]
        out.append({"modality": m, "configuration": c, "rule": rule, "post": post, "scans": len(validation),
                    "dice": float(np.nanmean([r["dice"] for r in validation])),
                    "segmented_ml": float(np.mean([r["segmented_ml"] for r in validation])),
                    "lesion_ml": float(np.mean([r["lesion_ml"] for r in validation])),
                    "healthy_fp_on": ("MS lesion-free tissue" if proxy else "healthy scans") + f" ({len(fp)})",
                    "healthy_fp_median_ml": float(np.median(fp)) if fp else float("nan"),
                    "healthy_fp_max_ml": float(np.max(fp)) if fp else float("nan"),
                    "test_dice": float(np.mean(test)) if test else float("nan"),
                    "seconds": float(np.mean([r["seconds"] for r in validation]))
                    if validation[0]["seconds"] is not None else None})
    return sorted(out, key=lambda r: (r["modality"], -np.nan_to_num(r["dice"], nan=-1)))


def meets_healthy_bound(mean_row: dict) -> bool:
    """A default may leave at most :data:`HEALTHY_MEDIAN_ML` (median) and :data:`HEALTHY_MAX_ML` (any one scan) of
    false positives in healthy brains.

    >>> meets_healthy_bound({"healthy_fp_median_ml": 8.0, "healthy_fp_max_ml": 24.0})
    True
    >>> meets_healthy_bound({"healthy_fp_median_ml": 8.0, "healthy_fp_max_ml": 148.0})
    False
    """
    return bool(mean_row["healthy_fp_median_ml"] <= HEALTHY_MEDIAN_ML and mean_row["healthy_fp_max_ml"] <= HEALTHY_MAX_ML)


def _choices(modality: str, rows: list[dict], curves: dict, info: dict, bundles: dict) -> dict:
    """For each bundle its best rule and clean-up that meets the healthy bound (else its best, flagged); the
    modality's default is :func:`default_of` them. A tuned threshold is re-tuned on every
    labelled development scan for shipping, and one that lands on an end of the search is passed over."""
    posts = {p.describe(): p for p in POSTS}
    table = mean_table(rows)
    means = [m for m in table if m["configuration"] != "intensity" and m["rule"] in SHIPPABLE]
    means.sort(key=lambda m: (not meets_healthy_bound(m), -np.nan_to_num(m["dice"], nan=-1)))
    tuning = [n for n, i in info.items() if i["role"] in ("validation", "calibration")]
    choice = {"bundles": {}, "default": None}
    for m in means:  # bound met first, then best Dice
        name, policy = m["configuration"].split()
        if name in choice["bundles"]:
            continue
        rule, post = m["rule"], posts[m["post"]]
        by_scan = curves[(m["configuration"], rule, post)]
        threshold = by_scan[next(iter(by_scan))][1][0] if rule in ("healthy-calibrated", "policy threshold") else None
        if rule in RULES:
            threshold = shipped_threshold(by_scan, tuning)
            if threshold is None:
                continue
        if rule == "policy threshold":
            threshold = None  # the policy's own: τ_stop is the subject's
        met = meets_healthy_bound(m)
        choice["bundles"][name] = {
            "policy": policy, "anomaly": RULES[rule][0] if rule in RULES else "squared",
            "threshold": None if threshold is None else float(threshold), "rule": rule,
            "median": post.median, "rim_mm": post.rim_mm, "min_component_ml": post.min_component_ml,
            "validation_dice": round(m["dice"], 4), "validation_scans": m["scans"],
            "healthy_fp_ml_median": round(m["healthy_fp_median_ml"], 2),
            "healthy_fp_ml_max": round(m["healthy_fp_max_ml"], 2), "healthy_scans": m["healthy_fp_on"],
            "healthy_bound_met": met}
    choice["default"] = default_of(choice, table)
    return choice


def default_of(choice: dict, means: list[dict]) -> str | None:
    """The bundle whose recorded rule met the healthy bound with the best mean validation Dice, if that Dice beats
    the plain intensity thresholds' (the one-line threshold, no clean-up: a default no better is not one); else
    None."""
    intensity = max(np.nan_to_num(m["dice"], nan=0.0) for m in means
                    if m["configuration"] == "intensity" and m["post"] == "none")
    met = [(c["validation_dice"], name) for name, c in choice["bundles"].items() if c["healthy_bound_met"]]
    best = max(met, default=None)
    return best[1] if best and best[0] > intensity else None


def lesion_table(modality: str, scans: list[Scan], rows: list[dict], choice: dict, models: Path, cache: Path,
                 seed: int = 0) -> list[dict]:
    """Lesion-wise detection on the MS scans (validation and test): the default (or, without one, each bundle's
    recorded rule) and the best intensity threshold, at the threshold each row was scored with, with lesions
    counted by size (under 0.1 ml, 0.1–1 ml, 1 ml and over)."""
    means = mean_table(rows)
    best_intensity = next(m for m in means if m["configuration"] == "intensity" and m["modality"] == modality.upper())
    wanted = [("intensity", best_intensity["rule"], best_intensity["post"])]
    for name, chosen in choice["bundles"].items():
        if choice["default"] in (None, name):
            wanted.append((f"{name} {chosen['policy']}", chosen["rule"], _post_of(chosen).describe()))
    posts = {p.describe(): p for p in POSTS}
    out = []
    for scan in scans:
        if not (scan.cohort.startswith("ms") and scan.role in ("validation", "test")):
            continue
        data = scan_data(scan)
        for row in rows:
            key = (row["configuration"], row["rule"], row["post"])
            if row["scan"] != scan.name or key not in wanted:
                continue
            post = posts[row["post"]]
            if row["configuration"] == "intensity":
                values = data.z
            else:
                name, policy = row["configuration"].split()
                maps = ScanMaps(models / f"{name}.pt", policy, scan, cache, seed).load()
                values = named_maps(maps, data, models / f"{name}.pt")[RULES.get(row["rule"], ("squared",))[0]]
            predicted = post.segment(values, row["threshold"], data.brain, data.spacing)
            out.append({"modality": modality.upper(), "scan": scan.name, "role": scan.role,
                        "configuration": row["configuration"], "rule": row["rule"], "post": row["post"],
                        "dice": row["dice"], "lesion_ml": row["lesion_ml"],
                        "false_positive_ml": row["false_positive_ml"],
                        **lesion_detection(predicted, data.truth), **found_by_size(predicted, data.truth,
                                                                                   data.voxel_ml)})
    return out


def _post_of(chosen: dict) -> PostProcess:
    return PostProcess(bool(chosen.get("median")), float(chosen.get("rim_mm") or 0),
                       float(chosen.get("min_component_ml") or 0))


SIZE_BINS_ML = (0.1, 1.0)


def found_by_size(prediction: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict:
    """Lesions (26-connected) found / present in each size bin (under 0.1 ml, 0.1–1 ml, 1 ml and over), as text.

    >>> truth = np.zeros((1, 1, 9), bool); truth[0, 0, [1, 4, 5]] = True
    >>> found_by_size(truth & (np.arange(9) < 3), truth, voxel_ml=0.1)
    {'found_under_0.1ml': '0/0', 'found_0.1_to_1ml': '1/2', 'found_1ml_up': '0/0'}
    """
    lesions, n = ndimage.label(truth, np.ones((3, 3, 3), bool))
    size = np.bincount(lesions.ravel())[1:] * voxel_ml
    hit = np.zeros(n, bool)
    hit[np.unique(lesions[prediction & truth]) - 1] = True
    bins = np.digitize(size, SIZE_BINS_ML)
    names = ("found_under_0.1ml", "found_0.1_to_1ml", "found_1ml_up")
    return {names[b]: f"{int(hit[bins == b].sum())}/{int((bins == b).sum())}" for b in range(3)}


def apply(choices: dict, models: Path) -> None:
    """Record each bundle's chosen policy, rule and clean-up in it, and each modality's default bundle — or None,
    where no configuration kept healthy brains within the bound — in ``defaults.json`` beside the bundles."""
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
    """Evaluate ``modalities``, each into ``out/<modality>/`` (``results.csv`` per scan, ``means.csv``,
    ``choices.json``, ``lesions.csv``), then rebuild the same four files in ``out`` from every modality folder
    there, so one sequence can be re-run alone; returns the choices of all of them."""
    models = models or model_directories()[0]
    for modality in modalities:
        scans = scans_of(modality)
        rows, choice, _ = evaluate_modality(modality, models, cache, seed, scans)
        folder = out / modality
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / "results.csv", rows)
        write_csv(folder / "means.csv", mean_table(rows))
        lesions = lesion_table(modality, scans, rows, choice, models, cache, seed)
        if lesions:
            write_csv(folder / "lesions.csv", lesions)
        (folder / "choices.json").write_text(json.dumps(choice, indent=1) + "\n")
    return combine(out)


def combine(out: Path) -> dict:
    """``out``'s four files rebuilt from its modality folders (in :data:`MODALITIES` order); returns the choices."""
    choices, tables = {}, {"results.csv": [], "means.csv": [], "lesions.csv": []}
    for modality in MODALITIES:
        folder = out / modality
        if not (folder / "choices.json").exists():
            continue
        choices[modality] = json.loads((folder / "choices.json").read_text())
        choices[modality]["default"] = default_of(choices[modality], read_csv(folder / "means.csv"))
        for name, rows in tables.items():
            if (folder / name).exists():
                rows += read_csv(folder / name)
    for name, rows in tables.items():
        if rows:
            write_csv(out / name, rows)
    (out / "choices.json").write_text(json.dumps(choices, indent=1) + "\n")
    return choices


def summary_table(choices: dict, means: list[dict], lesions: list[dict]) -> list[dict]:
    """One row per sequence: its default (or none) beside the best intensity threshold, with validation Dice,
    healthy false positives, held-out test Dice, and MS lesions found / false clusters (validation and test MS
    scans together)."""
    out = []
    for modality, choice in choices.items():
        mine = [m for m in means if m["modality"] == modality.upper()]
        shown = [("intensity", next(m for m in mine if m["configuration"] == "intensity"))]
        for name, chosen in choice["bundles"].items():
            if choice["default"] in (None, name):
                row = next(m for m in mine if m["configuration"] == f"{name} {chosen['policy']}"
                           and m["rule"] == chosen["rule"] and m["post"] == _post_of(chosen).describe())
                shown.append((name if choice["default"] else f"(none; --model {name})", row))
        for label, m in shown:
            key = (m["configuration"], m["rule"], m["post"])
            ms = [r for r in lesions if r["modality"] == modality.upper() and
                  (r["configuration"], r["rule"], r["post"]) == key]
            out.append({"sequence": modality.upper(), "default": label, "rule": f"{m['rule']}; clean-up: {m['post']}",
                        "validation_dice": m["dice"], "scans": m["scans"],
                        "healthy_fp_median_ml": m["healthy_fp_median_ml"], "healthy_fp_max_ml": m["healthy_fp_max_ml"],
                        "healthy_fp_on": m["healthy_fp_on"], "test_dice": m["test_dice"],
                        "ms_lesions_found": f"{sum(r['found'] for r in ms)}/{sum(r['lesions'] for r in ms)}"
                        if ms else "–",
                        "ms_false_clusters": sum(r["false_clusters"] for r in ms) if ms else None})
    return out


def report_markdown(folder: Path) -> str:
    """The validation's tables for BENCHMARK.md: the summary, each sequence's rules (without clean-up, and each
    one's best clean-up), the default's and the intensity threshold's every scan, and MS lesions one by one."""
    if not (folder / "means.csv").exists():
        return "(not run)"
    choices = json.loads((folder / "choices.json").read_text())
    means, rows = read_csv(folder / "means.csv"), read_csv(folder / "results.csv")
    lesions = read_csv(folder / "lesions.csv") if (folder / "lesions.csv").exists() else []
    parts = ["### Summary: each sequence's default\n\n" + markdown_table(summary_table(choices, means, lesions))]
    columns = ("configuration", "rule", "post", "scans", "dice", "segmented_ml", "lesion_ml", "healthy_fp_median_ml",
               "healthy_fp_max_ml", "healthy_fp_on", "test_dice", "seconds")
    for modality, choice in choices.items():
        mine = [m for m in means if m["modality"] == modality.upper()]
        best_post = {}
        for m in mine:  # best first: the first clean-up meeting the bound per rule, beside its plain form
            if m["post"] != "none" and meets_healthy_bound(m):
                best_post.setdefault((m["configuration"], m["rule"]), m)
        shown = [m for m in mine if m["post"] == "none" or best_post.get((m["configuration"], m["rule"])) is m]
        default = choice["default"]
        title = (f"default `{default}`, {choice['bundles'][default]['policy']}, {choice['bundles'][default]['rule']}"
                 if default else "**no default**: no bundle rule both met the healthy bound and beat the intensity "
                                 "threshold")
        parts.append(f"### {modality.upper()}: mean over {int(mine[0]['scans'])} validation scans ({title})\n\n" +
                     markdown_table([{k: m[k] for k in columns} for m in shown]))
    picked = []
    for modality, choice in choices.items():
        for name, chosen in choice["bundles"].items():
            if choice["default"] in (None, name):
                picked.append((modality.upper(), f"{name} {chosen['policy']}", chosen["rule"],
                               _post_of(chosen).describe()))
    wide = [{k: r[k] for k in ("modality", "scan", "role", "configuration", "rule", "post", "threshold", "dice",
                               "sensitivity", "precision", "segmented_ml", "false_positive_ml", "lesion_ml")}
            for r in rows if (r["modality"], r["configuration"], r["rule"], r["post"]) in picked or
            (r["configuration"] == "intensity" and r["post"] == "none")]
    parts.append("### Every scan: the defaults (or each bundle's rule where there is none) and the intensity "
                 "thresholds\n\n" + markdown_table(wide))
    if lesions:
        parts.append("### MS lesions, lesion by lesion (26-connected)\n\n" + markdown_table(lesions))
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=REPO / "docs" / "benchmark" / "validation")
    parser.add_argument("--models", type=Path, help="folder of <modality>-2d.pt and -3d.pt (default: the shipped)")
    parser.add_argument("--cache", type=Path, default=REPO.parent / "runs" / "validation-cache",
                        help="where each configuration's maps per scan are kept (each costs a full run)")
    parser.add_argument("--modality", action="append", choices=MODALITIES)
    parser.add_argument("--apply", action="store_true", help="record the choices in the bundles and defaults.json")
    parser.add_argument("--no-run", action="store_true",
                        help="evaluate nothing: rebuild the combined tables from the output's sequence folders")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    models = args.models or model_directories()[0]
    choices = combine(args.output) if args.no_run else \
        run(args.output, args.seed, models, args.cache, args.modality or MODALITIES)
    print(report_markdown(args.output))
    print(f"{(time.perf_counter() - start) / 60:.1f} min; wrote {args.output}")
    if args.apply:
        apply(choices, models)
        print(f"recorded the choices in the bundles in {models}")


if __name__ == "__main__":
    main()
