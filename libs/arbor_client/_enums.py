"""Friendly enum spellings: ``"catboost"`` <-> ``MODEL_TYPE_CATBOOST``, for flags and tables."""

from __future__ import annotations

from typing import Any

from arbor_client.errors import ArborClientError


def _names(enum: Any) -> list[str]:
    return list(enum.DESCRIPTOR.values_by_name)


def _prefix(enum: Any) -> str:
    """``MODEL_TYPE_`` for ``ModelType``: the common prefix of the enum's value names."""
    names = [n for n in _names(enum) if n.endswith("_UNSPECIFIED")]
    return names[0][: -len("UNSPECIFIED")] if names else ""


def parse_enum(enum: Any, value: str | int | None, field: str = "") -> int:
    """Accept ``3``, ``"MODEL_TYPE_LIGHTGBM"``, ``"lightgbm"`` or ``"LightGBM"``; None is 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        if value not in enum.values():
            raise ArborClientError.invalid_argument(f"unknown value {value}", field=field)
        return value
    text = value.strip().upper().replace("-", "_")
    prefix = _prefix(enum)
    for candidate in (text, prefix + text):
        if candidate in _names(enum):
            return int(enum.Value(candidate))
    choices = ", ".join(short for short in enum_choices(enum))
    raise ArborClientError.invalid_argument(
        f"unknown value {value!r}; choose one of {choices}", field=field
    )


def enum_label(enum: Any, value: int) -> str:
    """``"catboost"`` for MODEL_TYPE_CATBOOST; ``""`` for the UNSPECIFIED zero value."""
    try:
        name = str(enum.Name(value))
    except ValueError:
        return str(value)
    if name.endswith("_UNSPECIFIED"):
        return ""
    return name[len(_prefix(enum)) :].lower()


def enum_choices(enum: Any) -> list[str]:
    """The short, lower-case names of every value except UNSPECIFIED."""
    prefix = _prefix(enum)
    return [n[len(prefix) :].lower() for n in _names(enum) if not n.endswith("_UNSPECIFIED")]
