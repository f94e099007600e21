"""Numbers typed into forms and query strings: parsed and kept in bounds, or refused in one
line that says what is expected (a 422 through dashboard/errors.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Number = TypeVar("Number", int, float)


def bounded(text: str | None, default: Number, parse: Callable[[str], Number],
            low: Number, high: Number, refusal: str,
            error: type[ValueError] = ValueError) -> Number:
    """`parse(text)` within low..high (`default` when the field is empty); else `error`."""
    if text is None or not text.strip():
        return default
    try:
        value = parse(text)
    except ValueError:
        raise error(refusal) from None
    if not low <= value <= high:  # NaN is in no bounds
        raise error(refusal)
    return value
