"""Optuna search spaces as data, so a caller can see and override the ranges.

Each trainer declares a dict of :class:`ParamSpec` (name -> range + the library's default).
A caller overrides ranges with plain JSON, e.g.::

    {"learning_rate": {"low": 0.01, "high": 0.3, "log": true}, "depth": {"choices": [4, 6, 8]}}

An override may change ``low``/``high``/``log``/``step`` (the rest of the range is kept)
or replace the range with ``choices``. Unknown parameters and keys, ``low > high``, a log
range that touches zero, or non-integers for an integer parameter raise
``InvalidArgument`` whose field is ``search_space.<param>[.<key>]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from arbor_core.errors import InvalidArgument

ParamKind = Literal["float", "int", "categorical"]
_OVERRIDE_KEYS = frozenset({"low", "high", "log", "step", "choices"})


@dataclass(frozen=True)
class ParamSpec:
    """One hyperparameter: a numeric range (optionally log/stepped) or a list of choices."""

    name: str
    kind: ParamKind
    default: Any
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    def suggest(self, trial: Any) -> Any:
        """Draw a value from an ``optuna.Trial``."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def clamp(self, value: Any) -> Any:
        """``value`` moved into this range: the nearest choice, or clipped to [low, high]."""
        if self.choices is not None:
            if value in self.choices:
                return value
            numeric = [c for c in self.choices if isinstance(c, int | float)]
            if numeric and isinstance(value, int | float):
                return min(numeric, key=lambda c: abs(c - value))
            return self.choices[0]
        assert self.low is not None and self.high is not None
        clipped = min(max(value, self.low), self.high)
        return round(clipped) if self.kind == "int" else float(clipped)

    def to_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": list(self.choices), "default": self.default}
        out: dict[str, Any] = {
            "type": self.kind,
            "low": self.low,
            "high": self.high,
            "log": self.log,
            "default": self.default,
        }
        if self.step is not None:
            out["step"] = self.step
        return out

    def override(self, spec: Mapping[str, Any], field: str) -> ParamSpec:
        """A copy with the caller's range; validates it."""
        if not isinstance(spec, Mapping):
            raise InvalidArgument(
                "an override must be an object with low/high/log/step or choices", field=field
            )
        unknown = sorted(set(spec) - _OVERRIDE_KEYS)
        if unknown:
            raise InvalidArgument(
                f"unknown key {unknown[0]!r}; use low, high, log, step or choices",
                field=f"{field}.{unknown[0]}",
            )
        if "choices" in spec:
            if set(spec) - {"choices"}:
                raise InvalidArgument("choices cannot be combined with a range", field=field)
            choices = spec["choices"]
            if not isinstance(choices, list | tuple) or not choices:
                raise InvalidArgument("choices must be a non-empty list", field=f"{field}.choices")
            for choice in choices:
                self._check_value(choice, f"{field}.choices")
            return replace(self, choices=tuple(choices))
        if self.kind == "categorical":
            raise InvalidArgument(
                f"{self.name} is categorical; override it with choices", field=field
            )
        low = spec.get("low", self.low)
        high = spec.get("high", self.high)
        log = spec.get("log", self.log)
        step = spec.get("step", self.step)
        self._check_value(low, f"{field}.low")
        self._check_value(high, f"{field}.high")
        if not isinstance(log, bool):
            raise InvalidArgument("log must be true or false", field=f"{field}.log")
        if low > high:
            raise InvalidArgument(f"low {low} is above high {high}", field=f"{field}.low")
        if log and low <= 0:
            raise InvalidArgument("a log range needs low > 0", field=f"{field}.low")
        if step is not None:
            self._check_value(step, f"{field}.step")
            if step <= 0:
                raise InvalidArgument("step must be positive", field=f"{field}.step")
            if log:
                raise InvalidArgument("step cannot be combined with log", field=f"{field}.step")
        return replace(
            self,
            low=int(low) if self.kind == "int" else float(low),
            high=int(high) if self.kind == "int" else float(high),
            log=log,
            step=step,
            choices=None,
        )

    def _check_value(self, value: Any, field: str) -> None:
        if self.kind == "categorical":
            if not isinstance(value, str | int | float | bool) or value is None:
                raise InvalidArgument("choices must be strings, numbers or booleans", field=field)
            return
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InvalidArgument(f"{value!r} is not a finite number", field=field)
        if self.kind == "int" and not float(value).is_integer():
            raise InvalidArgument(f"{self.name} takes integers, got {value!r}", field=field)


def float_param(
    name: str, low: float, high: float, default: float, *, log: bool = False
) -> ParamSpec:
    return ParamSpec(name, "float", default, low, high, log)


def int_param(name: str, low: int, high: int, default: int, *, log: bool = False) -> ParamSpec:
    return ParamSpec(name, "int", default, low, high, log)


def apply_overrides(
    space: Mapping[str, ParamSpec],
    overrides: Mapping[str, Any] | None,
    field: str = "search_space",
) -> dict[str, ParamSpec]:
    """The space with the caller's ranges applied; unknown parameter names are refused."""
    result = dict(space)
    for name, spec in (overrides or {}).items():
        if name not in result:
            raise InvalidArgument(
                f"{name!r} is not tunable here; tunable: {', '.join(sorted(result))}",
                field=f"{field}.{name}",
            )
        result[name] = result[name].override(spec, f"{field}.{name}")
    return result
