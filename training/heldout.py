"""Held-out Dice of a model against a plain intensity threshold, both calibrated only on healthy data.

    python -m itermask_training.heldout --model flair-2d --case DIR [--case DIR ...]

Each case folder holds a BraTS-style FLAIR, brain mask and ``OTMultiClass`` label. The IterMask threshold and the
intensity threshold both come from the bundle's calibration (healthy held-out data); no label picks a threshold.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import itermask
from itermask.io import read_volume
from itermask.normalize import iterative_zscore


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean volumes; 1.0 when both are empty."""
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else 2.0 * float((prediction & truth).sum()) / float(total)


def intensity_baseline(image: np.ndarray, brain: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels brighter than ``threshold`` after the same in-brain normalisation the model uses."""
    import torch

    z = iterative_zscore(torch.from_numpy(image.astype(np.float32)), torch.from_numpy(brain)).numpy()
    return (z > threshold) & brain


def evaluate_case(model: itermask.ModelBundle, folder: Path, image_name: str, seed: int = 0) -> dict:
    image, affine = read_volume(folder / f"{image_name}.nii.gz")
    brain = read_volume(folder / "brainmask.nii.gz")[0] > 0.5
    truth = (read_volume(folder / "OTMultiClass.nii.gz")[0] > 0) & brain
    result = itermask.segment(image, brain, affine, model=model, seed=seed, device="cpu")
    baseline = intensity_baseline(image, brain, model.calibration["intensity_threshold"])
    return {"case": folder.name, "lesion_ml": float(truth.sum()) / 1000, "itermask_dice": dice(result.mask > 0, truth),
            "intensity_dice": dice(baseline, truth), "iterations": len(result.iterations),
            "segmentation_ml": result.scan_score["segmentation_ml"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flair-2d")
    parser.add_argument("--case", action="append", required=True, type=Path)
    parser.add_argument("--image-name", default="Flair_subtrMeanDivStd")
    args = parser.parse_args()
    model = itermask.load_model(args.model)
    rows = [evaluate_case(model, folder, args.image_name) for folder in args.case]
    print("| case | lesion ml | IterMask² Dice | intensity-threshold Dice | iterations |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['lesion_ml']:.1f} | {r['itermask_dice']:.3f} | {r['intensity_dice']:.3f} "
              f"| {r['iterations']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
