"""capsim's version, and a fingerprint of the code that produces numbers.

The version alone does not identify the code: a source checkout stays at the
same version through many changes. :func:`code_fingerprint` hashes the package's
own source, so a cached sweep point computed by other code is never reused.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["capsim_version", "code_fingerprint", "file_fingerprint"]

_PACKAGE = Path(__file__).resolve().parent


def capsim_version() -> str:
    try:
        return version("capsim")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


@cache
def code_fingerprint() -> str:
    """sha256 (first 16 hex digits) over the path and content of every ``.py`` file in the package."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def file_fingerprint(path: str | Path) -> str:
    """sha256 (first 16 hex digits) of one file's content, or ``"missing"``."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"
