"""The one exception type users see — a clear, one-line reason for refusing an input or a model file — and the
check of a number a user or a bundle gives."""
import math


class ItermaskError(ValueError):
    """Bad input or a bad model bundle. ``str(error)`` is a complete one-line message for the user."""


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a one-line message, cut after ``limit`` characters (it may be a whole file's worth)."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "…"


def finite_number(value, what: str) -> float:
    """``value`` as a float; a NaN or infinite τ or threshold would silently give an empty or full mask."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ItermaskError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ItermaskError(f"{what} must be a finite number, got {value!r}")
    return number


def positive_number(value, what: str) -> float:
    """``value`` as a finite float > 0: a shrink threshold τ of 0 or below would mark every voxel of the brain."""
    number = finite_number(value, what)
    if number <= 0:
        raise ItermaskError(f"{what} must be greater than 0, got {value!r}")
    return number
