"""``EngineFailed``: what every part of the client raises when the engine could not do what was
asked. A module of its own so that the client, its process helpers and the retry can all raise
and catch it without importing each other."""

from __future__ import annotations

import os


class EngineFailed(Exception):
    """The engine could not do what was asked. ``code`` is a wire error code (``wire.Code`` or
    an ``nst_engine.errors`` class's ``.code``); ``user_text()`` is what a user reads."""

    def __init__(self, code: str, message: str, hint: str = "",
                 log_path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint
        self.log_path = str(log_path) if log_path else None

    def user_text(self) -> str:
        parts = [self.message]
        if self.hint:
            parts.append(self.hint)
        if self.log_path:
            parts.append(f"Engine log: {self.log_path}")
        return "\n".join(parts)

    def __str__(self) -> str:
        return self.user_text()
