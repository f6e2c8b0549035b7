"""Small helpers shared by the PGS modules: argument checks, half-up rounding and the [assumed] marker."""
from __future__ import annotations

import math

__all__ = ["ASSUMED", "round_half_up", "check_int"]

ASSUMED = "[assumed]"


def round_half_up(x: float) -> int:
    """Round half up (no banker's rounding, so respaced indices never collide)."""
    return int(math.floor(x + 0.5))


def check_int(value, name: str, minimum: int = 1) -> int:
    """Check an integer argument (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
