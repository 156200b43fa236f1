"""``itermask web``: registered into the core CLI through the ``itermask.commands`` entry point."""
from __future__ import annotations

from pathlib import Path

from itermask.errors import ItermaskError


def _cmd_web(args) -> int:
    try:
        import trame_slicer  # noqa: F401
    except ImportError:
        raise ItermaskError('the web page needs its extra: pip install "itermask-slicer[web]"') from None
    for path in args.scans:
        if not Path(path).exists():
            raise ItermaskError(f"{path} does not exist")
    for path in [*([args.brain_mask] if args.brain_mask else []), *args.model]:
        if not Path(path).is_file():
            raise ItermaskError(f"{path} is not a file")
    from .app import IterMaskPage

    page = IterMaskPage(models=args.model, upload_limit_mb=args.max_upload_mb, device=args.device)
    if args.scans:
        page.open_paths(args.scans, brain_mask=args.brain_mask)
    where = f"http://{'localhost' if args.host in ('127.0.0.1', 'localhost') else args.host}:{args.port}/"
    page.server.controller.on_server_ready.add(lambda **_: print(f"IterMask is served at {where} (open it in a "
                                                                 "browser; Ctrl+C stops the server)", flush=True))
    page.server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False,
                      disable_logging=True)
    return 0


def register(subparsers) -> None:
    """Add ``web`` to the ``itermask`` command line."""
    p = subparsers.add_parser("web", help="serve the interactive IterMask page (the Slicer module in a browser)")
    p.add_argument("scans", nargs="*", metavar="SCAN",
                   help="scans to open (.nii.gz, .nrrd, or a folder of a DICOM series); or upload them in the page")
    p.add_argument("--brain-mask", metavar="MASK", help="brain mask of the first scan (default: its non-zero region)")
    p.add_argument("--model", action="append", default=[], metavar="BUNDLE",
                   help="a model bundle to offer besides the bundled ones (repeatable)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this computer only; 0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--max-upload-mb", type=float, default=512.0, help="the largest upload accepted (default 512)")
    p.set_defaults(func=_cmd_web)
