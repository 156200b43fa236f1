"""``itermask train``: registered into the core CLI through the ``itermask.commands`` entry point."""
from __future__ import annotations

from itermask.cli import number_argument, positive_float, positive_integer, seed_integer
from itermask.cohort import process_rank
from itermask.metadata import MODALITIES
from itermask.errors import ItermaskError

from .config import DEFAULTS_BY_DIMS, TrainConfig


def _cmd_train(args) -> int:
    from .train import train

    config = TrainConfig(source=args.data, output=args.output, name=args.name, modality=args.modality,
                         dims=args.dims, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         channels=args.channels, spacing_mm=args.spacing, size=args.size, seed=args.seed,
                         method=args.method, frequency=not args.no_frequency, dae_noise=args.dae_noise,
                         dae_noise_sd=args.dae_noise_sd, augment=not args.no_augment, init_from=args.init_from,
                         checkpoint_every=args.checkpoint_every)
    path = train(config, resume=not args.restart, stop_after=args.stop_after, device=args.device, cache=args.cache)
    if process_rank()[0] == 0:
        print(f"wrote {path}" if path else f"stopped after {args.stop_after} steps; run again to resume")
    return 0


def _cmd_calibrate(args) -> int:
    from itermask import load_model
    from itermask.cases import read_cases

    from .calibrate import recalibrate

    bundle = load_model(args.model)
    cases = [c for c in read_cases(args.data, bundle.modality, report=print) if c.split == "calibration"]
    if not cases:
        raise ItermaskError(f"{args.data} has no calibration case")
    recalibrate(bundle, cases, args.data, args.seed)
    tau = bundle.calibration.tau  # one-shot baselines have no τ
    print(("" if tau is None else f"tau {tau:.4g}, ") + f"threshold {bundle.calibration.threshold:.4g}; "
          f"wrote {bundle.save(args.output)}")
    return 0


def _by_dims(setting: str) -> str:
    """``default A (2D), B (3D)`` for a help text, from the one table of defaults."""
    two, three = (DEFAULTS_BY_DIMS[dims][setting] for dims in (2, 3))
    shown = (" ".join(map(str, v)) if isinstance(v, tuple) else f"{v:g}" for v in (two, three))
    return "default {} (2D), {} (3D)".format(*shown)


def register(subparsers) -> None:
    """Add ``train`` and ``calibrate`` to the ``itermask`` command line."""
    p = subparsers.add_parser("train", help="train a 2D IterMask² model pair or a 3D IterMask3D model on healthy scans "
                                            "and calibrate it (alone, or under torchrun on several processes/nodes)")
    p.add_argument("--data", required=True,
                   help="a CSV manifest (columns image,brain_mask,lesion_mask,split; split: train or calibration) or a "
                        "folder: BIDS, BraTS case folders, IXI names, or scans with optional <name>_brainmask / "
                        "<name>_lesion files beside them")
    p.add_argument("-o", "--output", required=True, help="folder for checkpoint.ckpt and <name>.pt")
    p.add_argument("--name", required=True, help="bundle name, e.g. flair-2d")
    p.add_argument("--modality", required=True, type=str.upper, choices=MODALITIES)
    p.add_argument("--dims", type=int, choices=(2, 3), default=2,
                   help="2: IterMask² on axial slices (first + masked network); 3: IterMask3D unified volume network")
    p.add_argument("--steps", type=positive_integer, help=_by_dims("steps"))
    p.add_argument("--batch-size", type=positive_integer,
                   help="slices (2D) or volumes (3D) per step; " + _by_dims("batch_size"))
    p.add_argument("--lr", type=number_argument(maximum=1.0), default=1e-3,
                   help="Adam's learning rate (default 1e-3; above 1 every step overshoots)")
    p.add_argument("--channels", type=positive_integer, nargs="+",
                   help="UNet widths per level; " + _by_dims("channels"))
    p.add_argument("--spacing", type=positive_float, help="model grid spacing in mm; " + _by_dims("spacing_mm"))
    p.add_argument("--size", type=positive_integer,
                   help="smallest model grid side in voxels (2D: in-plane); " + _by_dims("size"))
    p.add_argument("--seed", type=seed_integer, default=0)
    p.add_argument("--method", choices=("itermask", "ae", "dae"), default="itermask",
                   help="ae / dae: an evaluation baseline on the same backbone and data (autoencoder; denoising "
                        "autoencoder), not an IterMask model")
    p.add_argument("--dae-noise", choices=("positive", "signed"), default="positive",
                   help="DAE noise: hyper-intense only (the original DAE) or signed")
    p.add_argument("--dae-noise-sd", type=positive_float, default=1.2,
                   help="DAE noise SD in z-score units (default 1.2)")
    p.add_argument("--no-frequency", action="store_true",
                   help="ablation 'spatial masking only': the masked network does not see the high-frequency image")
    p.add_argument("--no-augment", action="store_true",
                   help="train without flips, deformations, bias field, gamma and noise (on by default)")
    p.add_argument("--init-from", metavar="MODEL",
                   help="fine-tune: start from this bundle's weights (a name or a path; same method, dims and widths)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: a GPU when there is one (under torchrun, GPU LOCAL_RANK), with bfloat16 mixed precision")
    p.add_argument("--cache", help="preprocessing cache folder (default <output>/preprocessed); may be shared")
    p.add_argument("--checkpoint-every", type=positive_integer, default=200, metavar="N",
                   help="steps between checkpoints")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--stop-after", type=positive_integer, metavar="N",
                   help="train at most N steps now, checkpoint, exit")
    p.set_defaults(func=_cmd_train)

    c = subparsers.add_parser("calibrate", help="re-calibrate τ and the threshold of a bundle on your healthy scans")
    c.add_argument("--model", required=True, help="bundle name or path")
    c.add_argument("--data", required=True, help="as for train; only the calibration cases are used")
    c.add_argument("-o", "--output", required=True, help="where to write the re-calibrated bundle (.pt)")
    c.add_argument("--seed", type=seed_integer, default=0)
    c.set_defaults(func=_cmd_calibrate)
