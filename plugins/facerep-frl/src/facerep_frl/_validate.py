"""attrs validators shared by the params classes (errors name the field, as configs report them)."""

from __future__ import annotations

from typing import Any

import attrs

from facerep.config import FieldError

__all__ = ["non_negative", "positive", "scale_range", "unit_interval"]


def positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise FieldError(f"must be positive, got {value!r}", attribute.name)


def non_negative(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value >= 0:
        raise FieldError(f"must be >= 0, got {value!r}", attribute.name)


def unit_interval(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise FieldError(f"must be in (0, 1), got {value!r}", attribute.name)


def scale_range(instance: Any, attribute: attrs.Attribute, value: tuple[float, float]) -> None:
    lo, hi = value
    if not 0.0 < lo <= hi <= 1.0:
        raise FieldError(f"must satisfy 0 < low <= high <= 1, got {value!r}", attribute.name)
