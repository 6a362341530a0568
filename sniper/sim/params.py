"""The simulator's one validation layer: the type and range of every value a client can hand
it (REST parameters, websocket op arguments, control-endpoint bodies, command-line options).

Why one layer: a value of the wrong shape that gets past the edge fails deep inside the model
(an unhashable list as a dict key, a NaN that no timestamp can format, a deadline past year
9999), after part of the request has already been applied; the client then sees a 500 or a
dropped connection and the state is half changed. Every surface therefore converts what it is
given with a `Kind` before anything else runs, and words the refusal in its own protocol:
REST answers BitMEX's `{"error": {"message": "Invalid <name>", "name": "ValidationError"}}`, the
websocket its error frame, the control endpoint and the CLI the `Invalid` text itself, which
names the value and what was expected.

The REST kinds are those of BitMEX's schema (swagger.json): `swagger` records the (type,
format) each stands for, so a test can hold the route tables to the official one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import orjson

from sniper.model import parse_time
from sniper.sim.rows import FIRST_TIMESTAMP, LAST_TIMESTAMP

INT32 = 2**31 - 1  # the schema's integers are int32 (taken as the symmetric range +-INT32)


class Invalid(ValueError):
    """A value that is not of its kind: `name` (parameter, field or option), what was expected."""

    def __init__(self, name: str, expected: str, value) -> None:
        super().__init__(name, expected, value)
        self.name, self.expected, self.value = name, expected, value

    def __str__(self) -> str:
        shown = repr(self.value)
        return f"{self.name}: expected {self.expected}, got {shown if len(shown) <= 80 else shown[:77] + '...'}"


@dataclass(frozen=True)
class Kind:
    """One kind of value: `read` converts what a client sent (query text, JSON value, option text)
    or raises TypeError/ValueError; the result must lie in [low, high] when those are set.
    Calling a kind, `kind(name, value)`, returns the converted value or raises Invalid."""

    expects: str
    read: Callable[[object], object]
    swagger: tuple[str, str | None] | None = None
    low: float | None = None
    high: float | None = None

    def __call__(self, name: str, value):
        try:
            out = self.read(value)
        except Invalid as inner:  # a field of an array or object: name the path to it
            path = inner.name if inner.name.startswith("[") else "." + inner.name
            raise Invalid(name + path, inner.expected, inner.value) from None
        except (TypeError, ValueError, OverflowError):
            raise Invalid(name, self.describe(), value) from None
        if (self.low is not None and out < self.low) or (self.high is not None and out > self.high):
            raise Invalid(name, self.describe(), value)
        return out

    def within(self, low: float | None = None, high: float | None = None) -> Kind:
        """The same kind over a narrower range (a bound not given stays as it was)."""
        return replace(self, low=self.low if low is None else low, high=self.high if high is None else high)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.expects} from {_shown(self.low)} to {_shown(self.high)}"
        if self.low is not None:
            return f"{self.expects} >= {_shown(self.low)}"
        if self.high is not None:
            return f"{self.expects} <= {_shown(self.high)}"
        return self.expects


def _shown(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) else f"{x:g}"


def _text(value) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value


def _scalar(value):
    """A number or a text, as a query, a form or a JSON scalar carries one (a bool is neither)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(value)
    return value


def _number(value) -> float:
    number = float(_scalar(value))
    if not math.isfinite(number):
        raise ValueError(value)
    return number


def _integer(value) -> int:
    number = _number(value)
    if number != int(number):
        raise ValueError(value)
    return int(number)


def _boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower() if isinstance(value, int) else _text(value).strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise ValueError(value)


def _time(value) -> float | None:
    """Epoch seconds; None for an empty text (`?startTime=` sets no bound)."""
    t = parse_time(_scalar(value))
    if t is not None and not FIRST_TIMESTAMP <= t <= LAST_TIMESTAMP:
        raise ValueError(value)
    return t


def _json(value):
    """A JSON-format parameter arrives as JSON text in a query or form, as a value in a JSON body."""
    return orjson.loads(value) if isinstance(value, str) else value


def _object(value) -> dict:
    obj = _json(value)
    if not isinstance(obj, dict):
        raise TypeError(value)
    return obj


def _names(value) -> list[str]:
    """One name, names separated by commas, or a JSON array of names."""
    if isinstance(value, str) and not value.lstrip().startswith("["):
        value = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, str):
        value = orjson.loads(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise TypeError(value)


TEXT = Kind("a string", _text, ("string", None))
NUMBER = Kind("a finite number", _number, ("number", "double"))
INTEGER = Kind("an integer", _integer, ("integer", "int32"), -INT32, INT32)
BOOLEAN = Kind("true or false", _boolean, ("boolean", None))
DATE_TIME = Kind("a time of years 1000 to 9999 (ISO-8601 or epoch seconds)", _time, ("string", "date-time"))
FILTER = Kind("a JSON object", _object, ("string", "JSON"))
NAMES = Kind("a name, a comma-separated list or a JSON array of names", _names, ("string", "JSON"))
TIMEOUT_MS = NUMBER.within(0)  # cancelAllAfter's timeout, over REST and the websocket alike


def choice(*values: str) -> Kind:
    """A string that is one of `values`."""
    def read(value) -> str:
        if value not in values:
            raise ValueError(value)
        return value

    return Kind(f"one of {', '.join(values)}", read)


def items(kind: Kind) -> Kind:
    """A JSON array whose every element is of `kind`."""
    def read(value) -> list:
        if not isinstance(value, list):
            raise TypeError(value)
        return [kind(f"[{i}]", v) for i, v in enumerate(value)]

    return Kind(f"a JSON array of {kind.expects}", read)


def record(schema: Mapping[str, Kind], *, required: tuple[str, ...] = ()) -> Kind:
    """A JSON object with the fields of `schema`, the `required` ones present."""
    def read(value) -> dict:
        if not isinstance(value, dict):
            raise TypeError(value)
        return validate(schema, value, required)

    return Kind(f"objects with {', '.join(schema)}", read)


def validate(schema: Mapping[str, Kind], params: Mapping, required: tuple[str, ...] = ()) -> dict:
    """The parameters `schema` declares, each converted by its kind. Undeclared ones are dropped
    (no handler reads them), and so are nulls: a JSON null is the same as leaving a parameter
    out. Raises Invalid for the first that is not of its kind or a `required` one missing."""
    for name in required:
        if params.get(name) is None:
            raise Invalid(name, f"{schema[name].describe()} (required)", None)
    return {name: kind(name, params[name]) for name, kind in schema.items() if params.get(name) is not None}
