"""Where crbio's data folders are: inside the installed package, or at the top of a checkout."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from crbio.errors import ConfigurationError

__all__ = ["data_path"]

_PACKAGED = Path(__file__).resolve().parent / "_data"
_CHECKOUT = Path(__file__).resolve().parents[2]


@cache
def data_path(folder: str, *parts: str) -> Path:
    """The path of a file of a data folder (``templates``, ``schemas``, ``stylesheets``, ``samples``).

    A built wheel carries the folders as ``crbio/_data/<folder>``; an editable install
    or a source checkout reads them from the repository root.
    """
    for base in (_PACKAGED, _CHECKOUT):
        candidate = base.joinpath(folder, *parts)
        if candidate.exists():
            return candidate
    raise ConfigurationError(
        f"crbio data file {'/'.join((folder, *parts))} is missing: the installation is incomplete",
        code="config.resource-missing",
    )
