"""Python packages the worker needs inside Slicer, checked without importing them, and installing them.

Slicer's Python and the worker's (``PythonSlicer``) share one site-packages, so what is found here is what the
worker will import; versions come from the installed package metadata, so torch is never imported into Slicer's
process. Nothing is installed unless the user pressed a button that needs the package and then agreed.
"""
from __future__ import annotations

import importlib.metadata
import re

MINIMUM_TORCH = "2.1"  # as pyproject.toml requires


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.13.0+cpu"`` → ``(2, 13, 0)``.

    >>> version_tuple("2.13.0+cpu") >= version_tuple("2.1")
    True
    """
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_problem(minimum: str = MINIMUM_TORCH) -> str | None:
    """Why the installed torch cannot be used (missing or older than ``minimum``), or None when it can."""
    version = installed_version("torch")
    if version is None:
        return "PyTorch is not installed"
    if version_tuple(version) < version_tuple(minimum):
        return f"PyTorch {version} is older than the {minimum} IterMask needs"
    return None


def install_torch(pytorch_utils_logic=None, pip_install=None, minimum: str = MINIMUM_TORCH) -> bool:
    """Install torch ≥ ``minimum``: through the PyTorch extension's installer when given (it picks the CUDA or CPU
    build and asks the user itself; declining there returns False), else with ``pip_install``. True once installed;
    raises RuntimeError with what to do next when installing failed."""
    requirement = f">={minimum}"
    try:
        if pytorch_utils_logic is not None:
            if pytorch_utils_logic.installTorch(askConfirmation=True, torchVersionRequirement=requirement) is None:
                return False  # the user declined in the extension's own dialog: nothing to report
        else:
            pip_install(f"torch{requirement}")
    except Exception as exc:
        raise RuntimeError(f"could not install PyTorch ({exc}). On a computer without internet access, install it from "
                           "a local wheel with slicer.util.pip_install('/path/to/torch.whl').") from exc
    problem = torch_problem(minimum)
    if problem:
        raise RuntimeError(f"{problem} after installation; restart Slicer and try again")
    return True


def install_packages(names: list[str], pip_install) -> None:
    """Install other packages (e.g. nilearn for the example scan) with ``pip_install``."""
    try:
        for name in names:
            pip_install(name)
    except Exception as exc:
        raise RuntimeError(f"could not install {', '.join(names)} ({exc}); without internet access, install a local "
                           "wheel with slicer.util.pip_install('/path/to/package.whl')") from exc
