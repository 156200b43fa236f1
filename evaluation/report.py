"""Run methods over labelled cases, score them, and write what a person reads: a markdown table, a CSV, figures.

    rows = evaluate_cases(methods, cases, out_dir)     # results.md, results.csv, figures/*.png in out_dir
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from itermask._shared import write_csv

from . import figures
from .cases import LabelledCase
from .methods import MethodResult
from .metrics import segmentation_metrics, voxel_ranking_metrics

COLUMNS = ("case", "method", "lesion_ml", "dice", "sensitivity", "precision", "jaccard", "assd_mm", "auroc", "auprc",
           "psnr_db", "ssim", "oracle_dice", "threshold", "tau_stop", "scan_score", "seconds", "peak_gb")
# Summary columns and how each is shown; "ORACLE" marks the one figure that uses labels to pick a threshold.
SUMMARY = {"dice": "Dice", "sensitivity": "sens.", "precision": "prec.", "jaccard": "Jaccard", "assd_mm": "ASSD mm",
           "auroc": "voxel AUROC", "auprc": "voxel AUPRC", "psnr_db": "PSNR dB", "ssim": "SSIM",
           "oracle_dice": "ORACLE Dice", "seconds": "s / case", "peak_gb": "peak GB"}
DECIMALS = {"assd_mm": 1, "psnr_db": 1, "seconds": 1, "peak_gb": 2}  # the rest: 3


def oracle_dice(score: np.ndarray, truth: np.ndarray, brain: np.ndarray, candidates: int = 200) -> float:
    """ORACLE: the best Dice over thresholds of ``score`` inside the brain, picked with the labels. Never a result
    of a method; only the ceiling a perfect threshold would reach.

    >>> score = np.array([0.1, 0.9, 0.8, 0.2]); truth = np.array([0, 1, 1, 0], bool)
    >>> oracle_dice(score, truth, np.ones(4, bool))
    1.0
    """
    values, labels = score[brain], truth[brain]
    thresholds = np.unique(np.quantile(values, np.linspace(0.0, 0.9999, candidates)))
    order = np.argsort(values)
    sorted_values, sorted_labels = values[order], labels[order]
    # For each threshold: predicted = values > t, counted from the sorted arrays.
    above = len(values) - np.searchsorted(sorted_values, thresholds, side="right")
    hits = np.cumsum(sorted_labels[::-1])[::-1]
    tp = np.where(above > 0, hits[np.clip(len(values) - above, 0, len(values) - 1)], 0)
    dice = 2 * tp / np.maximum(above + labels.sum(), 1)
    return float(dice.max())


class PeakMemory:
    """The process's peak resident memory during a block, in GB (Linux: VmHWM after resetting it; None elsewhere)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.available = True
        except OSError:
            self.available = False
        return self

    def __exit__(self, *exc):
        self.gb = None
        if self.available:
            status = Path("/proc/self/status").read_text()
            kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM"))
            self.gb = kb / 1024 ** 2
        return False


def score_case(result: MethodResult, case_name: str, truth: np.ndarray, brain: np.ndarray, spacing) -> dict:
    """One row of :data:`COLUMNS` for a method's result on a case."""
    row = {"case": case_name, "method": result.method, "lesion_ml": float(truth.sum() * np.prod(spacing) / 1000),
           **segmentation_metrics(result.segmentation, truth, spacing),
           **voxel_ranking_metrics(result.anomaly_map, truth, brain),
           "psnr_db": result.quality.get("psnr_db", math.nan), "ssim": result.quality.get("ssim", math.nan),
           "oracle_dice": oracle_dice(result.anomaly_map, truth, brain), "threshold": result.threshold,
           "tau_stop": result.policy.tau_stop if result.policy else None, "scan_score": result.scan_score, "seconds": result.seconds}
    return row


def evaluate_cases(methods: list, cases: list[LabelledCase], out_dir: Path, seed: int = 0, progress=print) -> list[dict]:
    """Every method on every case; writes ``results.csv``, ``results.md`` and ``figures/`` into ``out_dir``."""
    from itermask.preprocess import brain_mask_or_nonzero

    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    rows = []
    for case in cases:
        volumes = case.read()
        brain = brain_mask_or_nonzero(volumes.image, volumes.brain)
        truth = volumes.lesion & brain
        spacing = np.linalg.norm(volumes.affine[:3, :3], axis=0)
        predictions = {}
        for method in methods:
            start = time.perf_counter()
            with PeakMemory() as memory:
                result = method.run(volumes, seed)
            rows.append(dict(score_case(result, case.name, truth, brain, spacing), peak_gb=memory.gb))
            predictions[result.method] = result.segmentation
            if result.policy and result.policy.stop:
                figures.save_tau_figure(out_dir / "figures" / f"{case.name}_{_slug(result.method)}_tau.png",
                                        f"{case.name}: {result.method}", result.policy)
            progress(f"{case.name}: {result.method}: Dice {rows[-1]['dice']:.3f} "
                     f"({time.perf_counter() - start:.0f} s)")
        superior = int(np.argmax(np.abs(volumes.affine[2, :3])))
        figures.save_overlay_figure(out_dir / "figures" / f"{case.name}_overlay.png",
                                    f"{case.name}: truth (green) and segmentations (red)", volumes.image, brain, truth,
                                    predictions, superior)
    figures.save_dice_vs_size_figure(out_dir / "figures" / "dice_vs_lesion_size.png", rows)
    write_csv(out_dir / "results.csv", rows, COLUMNS)
    (out_dir / "results.md").write_text(markdown_report(rows, cases))
    return rows


def _slug(text: str) -> str:
    """A file-name-safe ASCII version of a method label: ``IterMask² + subject τ`` → ``IterMask2_subject_tau``."""
    text = text.replace("²", "2").replace("τ", "tau")
    return "_".join("".join(c if c.isascii() and (c.isalnum() or c in "-.") else " " for c in text).split())


def _fmt(value, decimals: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)


def summary_table(rows: list[dict]) -> str:
    """Markdown: one line per method, the mean of each metric over the cases (per-volume metrics, then averaged)."""
    lines = ["| method | cases | " + " | ".join(SUMMARY.values()) + " |", "|---|---|" + "---|" * len(SUMMARY)]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        means = [np.nanmean([np.nan if r[k] is None else r[k] for r in mine]) if any(
            r[k] is not None and not np.isnan(r[k]) for r in mine) else None for k in SUMMARY]
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(_fmt(m, DECIMALS.get(k, 3)) for m, k in zip(means, SUMMARY))
                     + " |")
    return "\n".join(lines)


def markdown_report(rows: list[dict], cases: list[LabelledCase]) -> str:
    per_case = ["| case | lesion ml | method | Dice | threshold | τ_stop | ORACLE Dice | s |", "|---|---|---|---|---|---|---|---|"]
    per_case += [f"| {r['case']} | {r['lesion_ml']:.1f} | {r['method']} | {_fmt(r['dice'])} | {_fmt(r['threshold'])} | "
                 f"{_fmt(r['tau_stop'])} | {_fmt(r['oracle_dice'])} | {r['seconds']:.1f} |" for r in rows]
    figures_md = "\n".join(f"![{c.name}](figures/{c.name}_overlay.png)" for c in cases)
    return f"""# Evaluation

Per-volume metrics averaged over {len(cases)} case(s). Every threshold is the method's own (calibrated on healthy data,
or the subject's τ_stop); no label picked one. The ORACLE column alone picks the best threshold per case with the
labels: a ceiling, not a result. ASSD is the symmetric mean surface distance in mm; voxel AUROC/AUPRC count brain
voxels only; PSNR/SSIM compare the reconstruction with the scan over the healthy brain (lesion left out).

{summary_table(rows)}

## Per case

{chr(10).join(per_case)}

## Figures

{figures_md}

![Dice against lesion size](figures/dice_vs_lesion_size.png)
"""
