"""InstallError: a failure the user can act on, and the one for a folder that cannot be written."""

from __future__ import annotations

import errno
from pathlib import Path


class InstallError(Exception):
    """A failure the user can act on: ``message`` says what happened, ``hint`` what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def write_error(e: OSError, what: str = "") -> InstallError:
    """A PermissionError / read-only file system in the user's words: which folder, what to do."""
    target = Path(e.filename) if e.filename else None
    folder = target.parent if target is not None else None
    if e.errno == errno.EROFS:
        why = "it is on a read-only file system"
    elif isinstance(e, PermissionError):
        why = "permission denied"
    else:
        why = e.strerror or str(e)
    where = f" in {folder}" if folder else ""
    return InstallError(
        f"Cannot write {what or (target.name if target else 'a file')}{where}: {why}.",
        f"Make {folder or 'that folder'} writable for your user (e.g. `chmod u+w \"{folder}\"`, "
        "or fix its owner), or point the installer elsewhere (--gimp-dir DIR for GIMP's "
        "profile, NST_DATA_DIR / NST_CONFIG_DIR for Style Transfer's own folders). "
        "Do not run the installer as another user (root) than the one who runs GIMP.")
