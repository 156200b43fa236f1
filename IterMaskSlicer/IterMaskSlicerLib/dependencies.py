"""Python packages the core needs inside Slicer (numpy ships with Slicer; torch does not), and installing them.

Nothing is installed without the widget having asked the user first. torch goes through the PyTorch extension's
installer when that extension is present (it picks the right CUDA/CPU build), else through pip.
"""
from __future__ import annotations

import importlib.util

REQUIRED = ("torch",)


def missing_packages(required=REQUIRED) -> list[str]:
    """The required top-level modules that cannot be imported here."""
    return [name for name in required if importlib.util.find_spec(name) is None]


def install(missing: list[str], pip_install, torch_installer=None) -> None:
    """Install ``missing`` packages: torch through ``torch_installer()`` when given, the rest with ``pip_install``.

    Raises RuntimeError with a message a user can act on when installation fails (e.g. an offline site).
    """
    try:
        for name in missing:
            if name == "torch" and torch_installer is not None:
                if torch_installer() is None:
                    raise RuntimeError("the PyTorch extension did not install torch")
            else:
                pip_install(name)
    except Exception as exc:
        raise RuntimeError(f"could not install {', '.join(missing)} ({exc}). On a computer without internet access, "
                           "install them from a local wheel with slicer.util.pip_install('/path/to/wheel.whl').") from exc
    still = missing_packages(missing)
    if still:
        raise RuntimeError(f"{', '.join(still)} still cannot be imported after installation; restart Slicer")
