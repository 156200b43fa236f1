"""``itermask train``: registered into the core CLI through the ``itermask.commands`` entry point."""
from __future__ import annotations


from itermask.bundle import MODALITIES


def _cmd_train(args) -> int:
    from .train import TrainConfig, train

    config = TrainConfig(manifest=args.manifest, output=args.output, name=args.name, modality=args.modality,
                         steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         channels=tuple(args.channels), spacing_mm=args.spacing, size=args.size, seed=args.seed)
    path = train(config, resume=not args.restart, stop_after=args.stop_after)
    print(f"wrote {path}" if path else f"stopped after {args.stop_after} steps; run again to resume")
    return 0


def register(subparsers) -> None:
    """Add ``train`` to the ``itermask`` command line."""
    p = subparsers.add_parser("train", help="train a 2D IterMask² model pair on healthy scans and calibrate it")
    p.add_argument("--manifest", required=True,
                   help="CSV with columns image,brain_mask,lesion_mask,split (split: train or calibration)")
    p.add_argument("-o", "--output", required=True, help="folder for checkpoint.ckpt and <name>.pt")
    p.add_argument("--name", required=True, help="bundle name, e.g. flair-2d")
    p.add_argument("--modality", required=True, type=str.upper, choices=MODALITIES)
    p.add_argument("--steps", type=int, default=1800)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--spacing", type=float, default=2.0, help="model grid spacing in mm")
    p.add_argument("--size", type=int, default=96, help="in-plane model grid size (voxels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--stop-after", type=int, metavar="N", help="train at most N steps now, checkpoint, exit")
    p.set_defaults(func=_cmd_train)
