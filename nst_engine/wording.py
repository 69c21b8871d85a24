"""How a user's value is quoted in a message: bounded excerpts, type names, "did you mean".

Torch-free and YAML-free: the settings' checks (``params``) and the preset loader use it.
"""

from __future__ import annotations

import difflib
from typing import Any, Iterable

from .bridge.wire import EXCERPT, excerpt


def cut(text: str, limit: int = EXCERPT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def close_match(word: str, options: Iterable[str]) -> str | None:
    if len(str(word)) > EXCERPT:  # no name is that long; and difflib's cost grows with it
        return None
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return close[0] if close else None


def did_you_mean_tail(word: str, options: Iterable[str]) -> str:
    close = close_match(word, options)
    return f" (did you mean '{close}'?)" if close else ""


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = close_match(word, options)
    return f"Did you mean '{close}'? " if close else ""


def type_name(value: Any) -> str:
    return {bool: "true/false", int: "a whole number", float: "a number", str: "a text",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)


def shown(value: Any) -> str:
    return f"{type_name(value)} ({excerpt(value)})" if not isinstance(value, (dict, list)) \
        else type_name(value)
