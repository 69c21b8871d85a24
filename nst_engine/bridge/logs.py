"""The engine log: the file an engine's stderr is appended to, moved aside when it grows, and
the tail of it that a failure message quotes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

LOG_NAME = "engine.log"
#: A log bigger than this at start is moved to ``engine.log.1`` (one old log is kept).
LOG_ROTATE_BYTES = 2 << 20
#: Set in attach's environment: the log the warm engine it starts appends to.
LOG_ENV = "NST_ENGINE_LOG"
#: The most of a log (or of a process's stderr) a message quotes.
TAIL_BYTES = 2000


def open_log(path: Path) -> Any:
    """Open the engine log for appending, first moving a large one aside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except OSError:
        pass  # missing, or held open elsewhere (Windows): keep appending
    return open(path, "ab")


def log_tail(path: str | os.PathLike, *, since: int = 0, max_bytes: int = TAIL_BYTES,
             max_lines: int = 15) -> str:
    """The end of the log, from offset ``since`` on (this start's part only)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(since, end - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-max_lines:])
