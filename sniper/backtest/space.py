"""The search space of `sniper train`: which strategy keys vary, and over what.

A space file (YAML) maps dotted config keys under `strategy` to what is tried there:

    strategy.motif.window: {low: 30, high: 120}                  # a range of the key's own type
    strategy.motif.threshold: {low: 0.0005, high: 0.01, log: true}  # searched on a log scale
    strategy.motif.metric: {choices: [ed, dtw]}                  # options
    strategy.trend.fast_period: {values: [500, 1054, 1500]}      # numbers (a grid); kept in order
    strategy.funding.positive[0].enter_minutes: {low: 1, high: 10}  # a key of a band-table row

A range may say `type: int` or `type: float`; it must be the key's own. Every bound and option
passes the config's rules for its key, and a trial's config is built by the config's own
builder (`config._build`), so a search never runs a value that `config.load` would refuse. A key
the configured strategy never reads (motif keys under `name: trend`) is refused too, unless
`strategy.name` is searched as well.

The optimisers work in a box with one coordinate per parameter: a range is its value (its
logarithm with `log: true`), options are their index. Integer coordinates (integer ranges off
the log scale, option indices) are rounded by the optimiser (SciPy's `integrality`) and by
`decode`; a log-scale integer range is rounded after the exponential.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from sniper import config, strategies
from sniper.config import Config, ConfigError, StrategyConfig

SPEC_FIELDS = ("low", "high", "type", "log", "choices", "values")
# which strategies read each section's keys (the motif switch drives both others)
READ_BY = {"trend": ("trend", "motif"), "funding": ("funding", "motif"), "motif": ("motif",)}
FLOAT_DIGITS = 4  # significant digits a searched number keeps: readable configs, stable resume keys
_PART = re.compile(r"^([A-Za-z_]\w*)(?:\[(\d+)\])?$")


class Infeasible(ValueError):
    """A trial the strategy refuses though every key is in range (a wavelet level deeper than
    the window allows); the search scores it as the worst possible."""


@dataclass(frozen=True)
class Param:
    """One searched key. `path` is relative to `strategy`; a band-table row is an int step."""

    key: str
    path: tuple[str | int, ...]
    kind: type | None = None  # int or float for a range; None for options
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    options: tuple = ()

    @property
    def bounds(self) -> tuple[float, float]:
        if self.kind is None:
            return 0.0, float(len(self.options) - 1)
        return (math.log(self.low), math.log(self.high)) if self.log else (float(self.low), float(self.high))

    @property
    def integral(self) -> bool:
        return self.kind is None or (self.kind is int and not self.log)

    def decode(self, v: float) -> Any:
        if self.kind is None:
            return self.options[min(max(int(round(v)), 0), len(self.options) - 1)]
        value = float(f"{math.exp(v) if self.log else v:.{FLOAT_DIGITS}g}")
        value = min(max(value, self.low), self.high)
        return int(round(value)) if self.kind is int else value

    def grid(self) -> tuple:
        """The values a grid search visits: the options, or every integer of an integer range."""
        if self.kind is None:
            return self.options
        if self.kind is int and not self.log:
            return tuple(range(int(self.low), int(self.high) + 1))
        raise ValueError(f"{self.key} is a range of {'numbers' if self.kind is float else 'integers on a log scale'}, "
                         "which has no grid: list them as values: [...]")

    def parse(self, text: str) -> Any:
        """A value back from its search.csv cell (`cell`)."""
        if self.kind is None:
            return {cell(o): o for o in self.options}[text]
        return self.kind(text)


def cell(value: Any) -> str:
    """A value as a search.csv cell: as YAML writes scalars, numbers in their shortest exact form."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Space:
    params: tuple[Param, ...]
    source: str

    @property
    def names(self) -> list[str]:
        return [p.key for p in self.params]

    @property
    def bounds(self) -> list[tuple[float, float]]:
        return [p.bounds for p in self.params]

    @property
    def integrality(self) -> np.ndarray:
        return np.array([p.integral for p in self.params])

    def decode(self, x) -> tuple:
        return tuple(p.decode(v) for p, v in zip(self.params, x, strict=True))

    def encode(self, values) -> np.ndarray:
        """The box point of a tuple of values (its inverse is `decode`)."""
        out = []
        for p, v in zip(self.params, values, strict=True):
            out.append(p.options.index(v) if p.kind is None else math.log(v) if p.log else v)
        return np.array(out, dtype=float)

    def size(self) -> int:
        """How many distinct points a grid search would visit."""
        return math.prod(len(p.grid()) for p in self.params)

    def grid(self):
        return itertools.product(*(p.grid() for p in self.params))

    def apply(self, cfg: Config, values) -> Config:
        """`cfg` with these values, validated as `config.load` validates a file, and the strategy
        built once so that a combination it refuses raises Infeasible."""
        raw = _raw(cfg.strategy)
        for p, v in zip(self.params, values, strict=True):
            node = raw
            for step in p.path[:-1]:
                node = node[step]
            node[p.path[-1]] = v
        trial = dataclasses.replace(cfg, strategy=config._build(StrategyConfig, raw, cfg.source, "strategy"))
        try:
            strategies.build(trial.strategy, taker_fee=trial.sim.taker_fee,
                             min_liquidation_distance=trial.risk.min_liquidation_distance)
        except ValueError as exc:
            raise Infeasible(str(exc)) from None
        return trial

    def describe(self) -> dict:
        """The space as plain data (for the resume check)."""
        return {p.key: {"low": p.low, "high": p.high, "log": p.log, "options": [cell(o) for o in p.options]}
                for p in self.params}


def _raw(obj: Any) -> Any:
    """A config value as the plain mapping/list/scalar tree a YAML file would give."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _raw(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [_raw(v) for v in obj]
    if isinstance(obj, Mapping):
        return dict(obj)
    return obj


def load(path: str | Path, cfg: Config) -> Space:
    """Read and check a space file against `cfg` (for the band tables' rows and strategy.name)."""
    source = str(path)
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(source, "", "space file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read space file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, "", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, Mapping) or not doc:
        raise ConfigError(source, "", "expected a mapping of strategy keys, e.g. "
                                      "strategy.motif.window: {low: 30, high: 120}")
    params = tuple(_param(source, str(key), spec, cfg) for key, spec in doc.items())
    if "strategy.name" not in doc:
        name = cfg.strategy.name
        for p in params:
            if p.path[0] in READ_BY and name not in READ_BY[p.path[0]]:
                raise ConfigError(source, p.key, f"has no effect: {cfg.source} runs strategy.name {name} "
                                                 f"(set it to {' or '.join(READ_BY[p.path[0]])}, or search "
                                                 "strategy.name too)")
    return Space(params, source)


def _field(source: str, key: str, cfg: Config) -> tuple[tuple[str | int, ...], Any, Mapping]:
    """(path under strategy, type, validation rules) of a dotted key, which must name a scalar."""
    parts = key.split(".")
    if parts[0] != "strategy" or len(parts) < 2:
        raise ConfigError(source, key, "only strategy.* keys can be searched")
    tp, value, rules, path, where = StrategyConfig, cfg.strategy, {}, [], "strategy"
    for part in parts[1:]:
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(source, key, f"{where} is a single value, it has no keys")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        m = _PART.match(part)
        if not m or m.group(1) not in fields:
            raise ConfigError(source, key, f"unknown key in {where} (known keys: {', '.join(fields)})")
        name, row = m.groups()
        tp, value, rules = typing.get_type_hints(tp)[name], getattr(value, name), fields[name].metadata
        path.append(name)
        where = f"{where}.{name}"
        if typing.get_origin(tp) is tuple:
            first = dataclasses.fields(typing.get_args(tp)[0])[0].name
            if row is None:
                raise ConfigError(source, key, f"a table: search a key of one of its rows, e.g. {where}[0].{first}")
            if int(row) >= len(value):
                raise ConfigError(source, key, f"{cfg.source} has {len(value)} rows in {where} "
                                               f"(0 ... {len(value) - 1})")
            tp, value = typing.get_args(tp)[0], value[int(row)]
            path.append(int(row))
            where = f"{where}[{row}]"
        elif row is not None:
            raise ConfigError(source, key, f"{where} is not a table")
    if dataclasses.is_dataclass(tp):
        raise ConfigError(source, key, f"a section: search one of its keys, e.g. "
                                       f"{where}.{dataclasses.fields(tp)[0].name}")
    return tuple(path), tp, rules


def _param(source: str, key: str, spec: Any, cfg: Config) -> Param:
    path, tp, rules = _field(source, key, cfg)
    if not isinstance(spec, Mapping):
        raise ConfigError(source, key, f"expected {{low: .., high: ..}}, {{choices: [..]}} or {{values: [..]}}, "
                                       f"got {spec!r}")
    for name in spec:
        if name not in SPEC_FIELDS:
            raise ConfigError(source, f"{key}.{name}", f"unknown field (known: {', '.join(SPEC_FIELDS)})")
    forms = [f for f in ("range", "choices", "values") if (f in spec if f != "range" else
                                                          "low" in spec or "high" in spec)]
    if len(forms) != 1:
        raise ConfigError(source, key, "give exactly one of low/high, choices or values")
    numeric = tp in (int, float)
    if forms[0] == "range":
        if not numeric:
            raise ConfigError(source, key, f"a range needs a number key; this one is {config._describe(tp)}: "
                                           "use choices: [...]")
        extra = set(spec) - {"low", "high", "type", "log"}
        if extra:
            raise ConfigError(source, f"{key}.{sorted(extra)[0]}", "goes with choices/values, not with low/high")
        if "type" in spec and spec["type"] != tp.__name__:
            raise ConfigError(source, f"{key}.type", f"the key holds {config._describe(tp)}: "
                                                     f"expected {tp.__name__}, got {spec['type']!r}")
        for end in ("low", "high"):
            if end not in spec:
                raise ConfigError(source, f"{key}.{end}", "missing (a range needs both low and high)")
        low, high = (_value(source, f"{key}.{end}", spec[end], tp, rules) for end in ("low", "high"))
        if not low < high:
            raise ConfigError(source, key, f"low ({low}) must be below high ({high})")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(source, f"{key}.log", f"expected true or false, got {log!r}")
        if log and low <= 0:
            raise ConfigError(source, f"{key}.log", f"a log scale needs low > 0, got {low}")
        return Param(key, path, tp, low, high, log)
    form = forms[0]
    extra = set(spec) - {form}
    if extra:
        raise ConfigError(source, f"{key}.{sorted(extra)[0]}", f"goes with low/high, not with {form}")
    items = spec[form]
    if not isinstance(items, list) or not items:
        raise ConfigError(source, f"{key}.{form}", f"expected a non-empty list, got {items!r}")
    if form == "values" and not numeric:
        raise ConfigError(source, f"{key}.values", f"the key holds {config._describe(tp)}: use choices: [...]")
    options = [_value(source, f"{key}.{form}[{i}]", v, tp, rules) for i, v in enumerate(items)]
    if len(set(map(cell, options))) != len(options):
        raise ConfigError(source, f"{key}.{form}", f"lists a value twice: {items!r}")
    return Param(key, path, options=tuple(sorted(options) if form == "values" else options))


def _value(source: str, key: str, value: Any, tp: Any, rules: Mapping) -> Any:
    """One bound or option, checked by the config's rules for the key it is a value of."""
    value = config._coerce(value, tp, source, key)
    config._check_rules(value, rules, source, key)
    return value


def render(text: str, trial: Config, space: Space) -> str:
    """The config file `text` with the trial's values of the searched keys: a value is replaced
    where the file holds it, a key the file leaves out is added to its section, so comments and
    layout survive. A file whose shape does not allow that (a flow-style or empty section on the
    way) is written out whole from the trial's values instead, without its comments."""
    text = text if text.endswith("\n") else text + "\n"
    root = yaml.compose(text)
    raw = {"strategy": _raw(trial.strategy)}
    paths = [("strategy", *p.path) for p in space.params]
    edits: dict[tuple[int, int, int, str], str] = {}  # (start, end, -depth, key) -> replacement
    for path in paths:
        node = root
        for depth, step in enumerate(path):
            child = _child(node, step)
            if child is None:
                if not isinstance(node, yaml.MappingNode) or node.flow_style or not node.value:
                    return _whole(text, raw)
                under = [q[depth + 1:] for q in paths if q[:depth + 1] == path[:depth + 1]]
                block = yaml.safe_dump({step: _subset(_at(raw, path[:depth + 1]), under)},
                                       default_flow_style=False, sort_keys=False)
                at, indent = _line_after(node), node.value[0][0].start_mark.column
                edits[(at, at, -depth, step)] = "".join(" " * indent + line + "\n" for line in block.splitlines())
                break
            node = child
        else:
            if not isinstance(node, yaml.ScalarNode):
                return _whole(text, raw)
            start, end, new = node.start_mark.index, node.end_mark.index, _scalar(_at(raw, path))
            gap = len(text[end:]) - len(text[end:].lstrip(" "))
            if text[end + gap: end + gap + 1] == "#":  # keep a trailing comment where it was
                new, end = new + " " * max(1, end + gap - start - len(new)), end + gap
            edits[(start, end, -depth, "")] = new
    # from the end back, so earlier positions stay valid; at one position the deeper key goes first
    for (start, end, *_), new in sorted(edits.items(), reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _child(node, step):
    """The node under `step` (a key of a mapping, an index of a sequence), or None."""
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if k.value == step), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
        return node.value[step]
    return None


def _line_after(node) -> int:
    """Where a new last entry of block mapping `node` starts: after the line its last value ends on."""
    while isinstance(node, yaml.CollectionNode) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    text = node.end_mark.buffer
    newline = text.find("\n", node.end_mark.index)
    return node.end_mark.index if newline < 0 else newline + 1


def _at(raw: Any, path) -> Any:
    for step in path:
        raw = raw[step]
    return raw


def _subset(raw: Any, paths: list) -> Any:
    """The part of `raw` on the way to `paths`: mappings cut to the keys on them, a table whole."""
    if not isinstance(raw, dict) or not all(paths):
        return raw
    groups: dict[str, list] = {}
    for p in paths:
        groups.setdefault(p[0], []).append(p[1:])
    return {k: _subset(raw[k], rest) for k, rest in groups.items()}


def _scalar(value: Any) -> str:
    """A scalar as YAML writes it (so that 1e-05 reads back as a number)."""
    return yaml.safe_dump(value, default_flow_style=True).split("\n")[0]


def _whole(text: str, raw: Mapping) -> str:
    doc = yaml.safe_load(text) or {}
    return yaml.safe_dump({**doc, **raw}, default_flow_style=False, sort_keys=False)
