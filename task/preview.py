"""How an error message quotes a value a user (or a file) gave: a bounded preview of it."""

from __future__ import annotations

from typing import Any

PREVIEW_CHARS = 80


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """``repr(value)``, cut to `limit` characters (a long string says how long it was).

    >>> preview("x" * 100, 5)
    "'xxxxx'... (100 characters)"
    """
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."
