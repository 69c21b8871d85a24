"""The engine process's standard streams and its log lines.

The protocol may own the real stdout (``serve``): before torch, or anything that might print,
is imported, fd 1 is moved to a private descriptor and fd 1 becomes a copy of stderr, so even a
C library's ``printf`` lands in the log instead of corrupting a message. stdin is likewise moved
aside and replaced by the null device. The warm engine (``serve --listen``) has no protocol on
its standard streams: they all go to the log file or the null device.
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path


def log(msg: str) -> None:
    """One line on stderr (the log file), with the time and the pid."""
    print(f"{time.strftime('%H:%M:%S')} serve[{os.getpid()}]: {msg}", file=sys.stderr,
          flush=True)


def _stdin_from_null() -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull, encoding="utf-8")


def _stdout_to(fd: int) -> None:
    """fd 1 (and Python's ``sys.stdout``) → what ``fd`` points at."""
    os.dup2(fd, 1)
    sys.stdout = sys.stderr


def claim_stdio() -> tuple[io.FileIO, io.FileIO]:
    """Private descriptors for the protocol; fd 1 → stderr, fd 0 → the null device."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    out_fd = os.dup(1)  # dup'd descriptors are not inherited by children (PEP 446)
    in_fd = os.dup(0)
    _stdout_to(2)
    _stdin_from_null()
    if sys.platform == "win32":
        import msvcrt
        msvcrt.setmode(out_fd, os.O_BINARY)
        msvcrt.setmode(in_fd, os.O_BINARY)
    # Raw files: no buffer lock a daemon reader thread could hold at interpreter exit.
    return io.FileIO(in_fd, "rb", closefd=True), io.FileIO(out_fd, "wb", closefd=True)


def open_log(path: Path) -> None:
    """fd 1 and fd 2 → the log (appending); fd 0 → the null device. Nothing is a terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(fd, 2)
    _stdout_to(fd)
    os.close(fd)
    _stdin_from_null()


def follow_log(path: Path) -> None:
    """The client moves a large log aside (engine.log.1): write to the new file from now on."""
    try:
        if os.stat(path).st_ino == os.fstat(2).st_ino:
            return
    except OSError:
        pass
    try:
        open_log(path)
    except OSError:
        pass


def exit_now(code: int) -> None:
    """End the process at once, skipping interpreter finalisation.

    With torch loaded and a reader thread blocked on its input, finalisation was seen to hang
    for seconds, and the plug-in waits for this process to be gone. Nothing is left to save:
    messages and log lines are written unbuffered."""
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)
