"""Held-out Dice of a model against a plain intensity threshold, neither threshold chosen with labels.

    python -m itermask_training.heldout --model flair-2d --case DIR [--case DIR ...]
    python -m itermask_training.heldout --model t1-3d --policy itermask3d --case ../shared/data/ms_lesjak2017/patient26 \
        --image-name T1 --brain-name "" --label-name lesion_mask

Each case folder holds the scan (``--image-name``), a brain mask (``--brain-name``; empty: the scan is skull-stripped,
its non-zero region is the brain) and a label (``--label-name``; any non-zero voxel is lesion), all ``.nii.gz``.
The IterMask threshold is the policy's own (IterMask²: calibrated on healthy held-out data; IterMask3D: the subject's
τ_stop) and the intensity threshold comes from the bundle's calibration; no label picks a threshold.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import itermask
from itermask.io import read_volume
from itermask.normalize import iterative_zscore


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean volumes; 1.0 when both are empty."""
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else 2.0 * float((prediction & truth).sum()) / float(total)


def oracle_dice(score: np.ndarray, truth: np.ndarray, brain: np.ndarray, candidates: int = 200) -> float:
    """ORACLE: the best Dice over thresholds of ``score`` inside the brain, chosen with the labels. Never a result of
    the method; shown only as the ceiling a perfect threshold would reach."""
    values = score[brain]
    thresholds = np.unique(np.quantile(values, np.linspace(0.5, 0.9999, candidates)))
    return max(dice((score > t) & brain, truth) for t in thresholds)


def intensity_baseline(image: np.ndarray, brain: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels brighter than ``threshold`` after the same in-brain normalisation the model uses."""
    z = iterative_zscore(torch.from_numpy(image.astype(np.float32)), torch.from_numpy(brain)).numpy()
    return (z > threshold) & brain


def evaluate_case(model: itermask.ModelBundle, folder: Path, image_name: str, policies: list[str], seed: int = 0,
                  brain_name: str = "brainmask", label_name: str = "OTMultiClass") -> dict:
    """Per-volume Dice of each policy and of the intensity baseline on one labelled case."""
    image, affine = read_volume(folder / f"{image_name}.nii.gz")
    brain = read_volume(folder / f"{brain_name}.nii.gz")[0] > 0.5 if brain_name else image != 0
    truth = (read_volume(folder / f"{label_name}.nii.gz")[0] > 0) & brain
    baseline = intensity_baseline(image, brain, model.calibration["intensity_threshold"])
    normalised = iterative_zscore(torch.from_numpy(image.astype(np.float32)), torch.from_numpy(brain)).numpy()
    row = {"case": folder.name, "lesion_ml": float(truth.sum()) / 1000, "intensity_dice": dice(baseline, truth),
           "intensity_oracle_dice": oracle_dice(normalised, truth, brain)}
    for policy in policies:
        start = time.perf_counter()
        session = itermask.Session(model, image, affine, brain, policy=policy, seed=seed, device="cpu")
        result = session.run()
        final_mask = session.prepared.mask_to_input(session.current.mask)
        row[policy] = {"dice": dice(result.mask > 0, truth), "threshold": result.threshold,
                       "final_mask_dice": dice(final_mask, truth),
                       "oracle_dice": oracle_dice(result.anomaly_map, truth, brain),
                       "iterations": len(result.iterations), "seconds": round(time.perf_counter() - start, 1),
                       "tau_stop": result.policy.get("tau_stop"), "segmentation_ml": result.scan_score["segmentation_ml"],
                       "final_mask_ml": result.scan_score["final_mask_ml"]}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flair-2d")
    parser.add_argument("--case", action="append", required=True, type=Path)
    parser.add_argument("--image-name", default="Flair_subtrMeanDivStd")
    parser.add_argument("--brain-name", default="brainmask", help="empty: the non-zero region of the scan")
    parser.add_argument("--label-name", default="OTMultiClass")
    parser.add_argument("--policy", action="append", choices=["itermask2", "itermask3d"],
                        help="policies to score (default: itermask2)")
    args = parser.parse_args()
    policies = args.policy or ["itermask2"]
    model = itermask.load_model(args.model)
    rows = [evaluate_case(model, folder, args.image_name, policies, brain_name=args.brain_name,
                          label_name=args.label_name) for folder in args.case]
    print("| case | lesion ml | method | Dice (policy's threshold) | threshold | Dice of final mask | ORACLE Dice | "
          "iterations | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for p in policies:
            c = r[p]
            print(f"| {r['case']} | {r['lesion_ml']:.1f} | {p} | {c['dice']:.3f} | {c['threshold']:.3g} | "
                  f"{c['final_mask_dice']:.3f} | "
                  f"{c['oracle_dice']:.3f} | {c['iterations']} | {c['seconds']} |")
        print(f"| {r['case']} | {r['lesion_ml']:.1f} | intensity threshold | {r['intensity_dice']:.3f} | "
              f"{model.calibration['intensity_threshold']:.3g} | – | "
              f"{r['intensity_oracle_dice']:.3f} | – | – |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
