"""``itermask evaluate``: registered into the core CLI through the ``itermask.commands`` entry point."""
from __future__ import annotations

from pathlib import Path

from itermask.cli import seed_integer


def build_methods(models: list[str], policies: list[str] | None, intensity: bool, frequency_only: bool,
                  calibration_data: str | None, seed: int = 0) -> list:
    """The methods to compare: each IterMask model with each policy (default: the model's own), each baseline
    model (AE, DAE) as a one-shot method, optionally each IterMask model's first iteration alone (frequency-only
    ablation, thresholded on ``calibration_data``'s healthy cases) and the intensity threshold of the first
    IterMask model."""
    from itermask import load_model
    from itermask.cases import read_cases
    from itermask.errors import ItermaskError
    from itermask.calibration import calibrate_one_shot

    from .methods import IntensityThreshold, IterMask, OneShot

    bundles = [load_model(m) for m in models]
    itermask = [b for b in bundles if b.method == "itermask"]
    methods = []
    for bundle in bundles:
        if bundle.method != "itermask":
            methods.append(OneShot(bundle))
            continue
        for policy in policies or [bundle.metadata.policy.default]:
            methods.append(IterMask(bundle, policy))
        if frequency_only:
            if not calibration_data:
                raise ItermaskError("--frequency-only needs --calibration-data (healthy scans for its threshold)")
            healthy = [c for c in read_cases(calibration_data, bundle.modality) if c.split == "calibration"]
            threshold = calibrate_one_shot(bundle, healthy, seed).threshold
            methods.append(OneShot(bundle, threshold, label=f"{bundle.name} frequency only"))
    if intensity:
        if not itermask:
            raise ItermaskError("--intensity takes its calibrated threshold from an IterMask model; pass one")
        methods.append(IntensityThreshold(itermask[0].calibration.intensity_threshold))
    return methods


def _cmd_evaluate(args) -> int:
    from .cases import find_cases
    from .report import evaluate_cases, summary_table

    cases = find_cases(args.cases, args.image_name, args.label_name, args.brain_name)
    methods = build_methods(args.model, args.policy, args.intensity, args.frequency_only, args.calibration_data,
                            args.seed)
    rows = evaluate_cases(methods, cases, Path(args.output), seed=args.seed)
    print(summary_table(rows))
    print(f"wrote {Path(args.output) / 'results.md'}, results.csv and figures/")
    return 0


def register(subparsers) -> None:
    """Add ``evaluate`` to the ``itermask`` command line."""
    p = subparsers.add_parser("evaluate", help="score models on labelled cases: metrics table and figures")
    p.add_argument("cases", nargs="+", help="case folders, or folders of case folders")
    p.add_argument("--model", action="append", required=True,
                   help="bundle name or path; repeat to compare (IterMask models and AE/DAE baselines)")
    p.add_argument("--policy", action="append", choices=["itermask2", "itermask3d"],
                   help="policies for IterMask models (default: each model's own); repeat for both")
    p.add_argument("--intensity", action="store_true", help="add the calibrated intensity-threshold baseline")
    p.add_argument("--frequency-only", action="store_true",
                   help="add the ablation 'frequency masking only': each IterMask model's first iteration alone")
    p.add_argument("--calibration-data", help="manifest whose calibration cases set the frequency-only threshold")
    p.add_argument("--image-name", default="FLAIR", help="scan file name in each case folder, without suffix")
    p.add_argument("--label-name", default="lesion_mask", help="label file name (any non-zero voxel is lesion)")
    p.add_argument("--brain-name", default="", help="brain mask file name; empty: the scans are skull-stripped")
    p.add_argument("-o", "--output", required=True, help="folder for results.md, results.csv and figures/")
    p.add_argument("--seed", type=seed_integer, default=0)
    p.set_defaults(func=_cmd_evaluate)
