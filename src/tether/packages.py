"""Locate files that ship inside installed PyPI packages (data sets, the default model), without
importing those packages.

Many data carriers fail on import (their dependencies are deliberately not installed), so we find
their directory through ``importlib.util.find_spec`` and never hard-code a site-packages path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tether.errors import MissingDependencyError, TetherError


def package_dir(import_name: str, pip_name: str | None = None, purpose: str = "this data source") -> Path:
    """Directory of an installed package (``import_name`` as in ``import x``)."""
    pip_name = pip_name or import_name.replace("_", "-")
    spec = importlib.util.find_spec(import_name)
    if spec is None:
        raise MissingDependencyError(pip_name, purpose, install=f"pip install --no-deps {pip_name}")
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    if spec.origin:
        return Path(spec.origin).parent
    raise TetherError(f"cannot locate the files of package '{pip_name}'")


def package_file(
    import_name: str, relative: str, pip_name: str | None = None, purpose: str = "this data source"
) -> Path:
    """A file inside an installed package; a clear error if the package or file is missing."""
    path = package_dir(import_name, pip_name, purpose) / relative
    if not path.exists():
        raise TetherError(
            f"the package '{pip_name or import_name}' is installed but lacks {relative}",
            where=str(path),
            hint="reinstall the pinned version listed in the README",
        )
    return path
