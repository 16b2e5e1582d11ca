"""The versions a result depends on: streammix's own and those of the libraries that shape its numbers."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__", "versions"]

try:
    __version__ = version("streammix")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def versions() -> dict[str, str]:
    """Versions of Python, streammix and the libraries that shape its numbers.

    Example:
        >>> sorted(versions())
        ['astropy', 'numpy', 'python', 'scipy', 'streammix', 'torch', 'zuko']
    """
    names = ["streammix", "torch", "numpy", "astropy", "zuko", "scipy"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except Exception:  # pragma: no cover - package absent
            out[name] = "absent"
    return out
