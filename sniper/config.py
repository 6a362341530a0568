"""YAML configuration into frozen dataclasses.

The schema *is* the dataclasses below: field types, defaults and the
`_rule(...)` metadata (range, choices) drive one generic validator, so a new
key is declared once and validated everywhere. Every problem raises
`ConfigError` with the file, the dotted key path and what was expected; the
CLI prints that single line and exits 2.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sniper import log
from sniper.auth import Credentials

ENDPOINTS = {
    "live": "https://www.bitmex.com",
    "testnet": "https://testnet.bitmex.com",
}
SIM_DEMO_KEY = "sim-demo-key"
SIM_DEMO_SECRET = "sim-demo-secret-0123456789"
ENV_KEY, ENV_SECRET = "BITMEX_API_KEY", "BITMEX_API_SECRET"


class ConfigError(Exception):
    """One bad input: where it is and what was expected."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source, self.key, self.problem = source, key, problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


def _rule(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
          choices: tuple | None = None, positive: bool = False) -> Any:
    """A dataclass field with validation metadata."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "positive": positive}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ExchangeConfig:
    base_url: str = _rule()  # required: sim | testnet | live | http(s)://host[:port]
    symbol: str = "XBTUSD"
    name: str = _rule("bitmex", choices=("bitmex",))

    @property
    def is_sim(self) -> bool:
        return self.base_url == "sim"

    @property
    def is_live(self) -> bool:
        return self.base_url == "live" or self.base_url.rstrip("/") == ENDPOINTS["live"]

    def rest_base(self) -> str:
        """The HTTP base URL (without /api/v1); the embedded simulator's is known only once it runs."""
        if self.is_sim:
            raise ValueError("the embedded simulator's URL is assigned when it starts")
        return ENDPOINTS.get(self.base_url, self.base_url).rstrip("/")


@dataclass(frozen=True)
class SimConfig:
    data: str | None = None  # 1-minute bars CSV(.gz); None = the bundled sample
    funding: str | None = None  # funding CSV; None = the bundled rates
    speed: float = _rule(1.0, lo=0.0, hi=100_000.0)
    seed: int = _rule(1, lo=0)
    port: int = _rule(0, lo=0, hi=65535)
    balance_xbt: float = _rule(1.0, positive=True)
    maker_fee: float = _rule(-0.00025, lo=-0.01, hi=0.01)  # fraction of traded value; negative = rebate
    taker_fee: float = _rule(0.00075, lo=0.0, hi=0.01)
    start: str | None = None  # ISO time the replay starts at; None = the bundled data's default


@dataclass(frozen=True)
class CredentialsConfig:
    secrets_file: str | None = None  # YAML with api_key/api_secret, mode 0600
    api_key: str | None = None  # inline keys are accepted for the simulator only
    api_secret: str | None = field(default=None, repr=False)


STYLES = ("passive", "market")


@dataclass(frozen=True)
class TrendConfig:
    """The long-term logic: the reference system's dual EMA over 1-minute closes."""

    fast_period: int = _rule(1054, lo=2, hi=100_000)  # EMA of the closes
    slow_period: int = _rule(370, lo=2, hi=100_000)  # EMA of that EMA; long while it rises
    # target = margin balance x price x leverage x (1 - taker fee x leverage); risk caps it
    leverage: float = _rule(5.0, positive=True, hi=100.0)
    style: str = _rule("passive", choices=STYLES)


@dataclass(frozen=True)
class FundingBand:
    """One row of the settlement table: for |rate| above `above`, enter `enter_minutes`
    before settlement on the receiving side; `reverse` plays the post-funding reversal."""

    above: float = _rule(lo=0.0, hi=0.1)
    enter_minutes: int = _rule(lo=1, hi=479)
    reverse: bool = False


def _bands(*rows: tuple[float, int, bool]) -> tuple[FundingBand, ...]:
    return tuple(FundingBand(a, m, r) for a, m, r in rows)


@dataclass(frozen=True)
class FundingConfig:
    """The short-term logic around the 8-hourly settlement (04:00, 12:00, 20:00 UTC)."""

    # rate > 0: longs pay, the short side receives; rate < 0: the long side receives
    positive: tuple[FundingBand, ...] = field(default=_bands(
        (0.0030, 3, True), (0.0020, 4, True), (0.0015, 5, False), (0.0010, 6, False), (0.0005, 8, False)))
    negative: tuple[FundingBand, ...] = field(default=_bands(
        (0.0030, 3, True), (0.0020, 5, True), (0.0015, 7, False), (0.0010, 8, False), (0.0005, 10, False)))
    leverage: float = _rule(3.0, positive=True, hi=100.0)  # sized as in trend, at this leverage
    style: str = _rule("market", choices=STYLES)
    exit_after_minutes: int = _rule(1, lo=0, hi=60)  # minutes after settlement to exit or reverse
    reverse_minutes: int = _rule(15, lo=1, hi=240)  # how long the post-funding reversal is held
    stop_fraction: float = _rule(0.5, positive=True, hi=1.0)  # exit when the adverse move eats this
    # fraction of the distance from entry to the bankruptcy price


# PyWavelets' orthogonal discrete families (pywt.wavelist(kind="discrete") holds them all)
WAVELETS = ("haar", *(f"db{i}" for i in range(1, 21)), *(f"sym{i}" for i in range(2, 21)),
            *(f"coif{i}" for i in range(1, 18)))


@dataclass(frozen=True)
class MotifConfig:
    """The regime switch: k nearest earlier motifs of the last `window` closes forecast the
    next `horizon` minutes; a strong, agreeing forecast hands control to the short-term logic."""

    window: int = _rule(62, lo=4, hi=10_000)  # L: closes per motif
    k: int = _rule(4, lo=1, hi=100)  # neighbours
    horizon: int = _rule(18, lo=1, hi=10_000)  # H: minutes forecast (and held)
    metric: str = _rule("dtw", choices=("ed", "dtw"))
    dtw_window: float = _rule(0.135, lo=0.0, hi=1.0)  # Sakoe-Chiba band, fraction of L
    exclusion: int = _rule(0, lo=0)  # 0 = the matcher's default, ceil(L/4)
    # EMA period across bars of the forecast; 1 = none. A (re)start searches the last ~7 x period
    # bars (the EMA truncated at weights of 1e-6), hence the bound
    forecast_ema: int = _rule(38, lo=1, hi=240)
    threshold: float = _rule(0.002, positive=True, hi=1.0)  # |forecast| (relative move) that hands over
    agreement: float = _rule(0.75, lo=0.0, hi=1.0)  # share of neighbours on the forecast's side
    leverage: float = _rule(3.0, positive=True, hi=100.0)  # sized like trend, while in control
    style: str = _rule("passive", choices=STYLES)
    # e.g. db4: match causally DWT-smoothed closes (each from the `window` closes ending at it,
    # PyWavelets); null = raw closes
    wavelet: str | None = _rule(None, choices=WAVELETS)
    wavelet_level: int = _rule(3, lo=1, hi=12)  # at most what a DWT of `window` points allows
    wavelet_keep: int = _rule(1, lo=0, hi=12)  # coarsest detail levels kept; >= level keeps all


@dataclass(frozen=True)
class StrategyConfig:
    name: str = _rule("motif", choices=("flat", "trend", "funding", "motif"))
    lookback_minutes: int = _rule(525_600, lo=1440, hi=5_000_000)  # bars kept in memory for decisions
    trend: TrendConfig = field(default_factory=TrendConfig)
    funding: FundingConfig = field(default_factory=FundingConfig)
    motif: MotifConfig = field(default_factory=MotifConfig)


@dataclass(frozen=True)
class TrainConfig:
    """`sniper train`'s defaults (its options override them): what a search maximises and how."""

    objective: str = _rule("sharpe", choices=("return", "sharpe", "calmar"))  # net of fees and funding
    method: str = _rule("de", choices=("de", "random", "grid"))
    budget: int = _rule(200, lo=1, hi=1_000_000)  # backtests at the most
    seed: int = _rule(1, lo=0)


@dataclass(frozen=True)
class RiskConfig:
    max_position: int = _rule(1000, lo=0)
    max_leverage: float = _rule(3.0, positive=True, hi=100.0)
    min_liquidation_distance: float = _rule(0.15, lo=0.0, hi=1.0)
    max_order_qty: int = _rule(1000, positive=True)
    max_orders_per_minute: int = _rule(30, positive=True)
    daily_loss_limit_xbt: float = _rule(0.05, positive=True)
    kill_switch_file: str = "var/KILL"
    flatten_on_kill: bool = False


@dataclass(frozen=True)
class ExecutionConfig:
    reprice_ticks: int = _rule(0, lo=0)
    cycle_seconds: float = _rule(0.5, positive=True, hi=60.0)
    dead_mans_switch_ms: int = _rule(60000, lo=0)
    dead_mans_refresh_s: float = _rule(15.0, positive=True)
    stray_orders: str = _rule("cancel", choices=("cancel", "adopt"))
    market_band: float = _rule(0.005, positive=True, hi=0.1)
    confirm_timeout_s: float = _rule(5.0, positive=True)
    cancel_on_exit: bool = True


@dataclass(frozen=True)
class WebsocketConfig:
    ping_interval_s: float = _rule(5.0, positive=True, hi=60.0)  # send `ping` after this much silence
    dead_after_s: float = _rule(15.0, positive=True, hi=300.0)  # no pong/data for this long: reconnect
    stale_after_s: float = _rule(30.0, positive=True, hi=3600.0)  # no table message for this long: not ready
    backoff_initial_s: float = _rule(0.5, positive=True, hi=60.0)  # first reconnect delay, doubling
    backoff_max_s: float = _rule(30.0, positive=True, hi=600.0)

    def client_options(self) -> dict:
        """The WsClient keyword arguments these settings stand for."""
        return {"ping_interval": self.ping_interval_s, "dead_after": self.dead_after_s,
                "stale_after": self.stale_after_s, "backoff_initial": self.backoff_initial_s,
                "backoff_max": self.backoff_max_s}


@dataclass(frozen=True)
class PathsConfig:
    journal: str = "var/journal.sqlite"
    history: str = "var/history.sqlite"


@dataclass(frozen=True)
class LoggingConfig:
    level: str = _rule("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    format: str = _rule("text", choices=("text", "json"))
    file: str | None = None
    max_bytes: int = _rule(10_000_000, positive=True)
    backups: int = _rule(5, lo=0)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = _rule(9108, lo=0, hi=65535)  # 0 = any free port (logged at start)


@dataclass(frozen=True)
class Config:
    exchange: ExchangeConfig  # required: which exchange is never a silent default
    credentials: CredentialsConfig = field(default_factory=CredentialsConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    websocket: WebsocketConfig = field(default_factory=WebsocketConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    source: str = field(default="<defaults>", compare=False)

    def api_credentials(self, environ: Mapping[str, str] | None = None) -> Credentials | None:
        """The API key pair: for the simulator its inline or demo keys; otherwise the environment
        first, then the secrets file."""
        return resolve_credentials(self, os.environ if environ is None else environ)


# ----------------------------------------------------------------------------- validation

def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if origin is not None and issubclass(origin, Mapping) or tp is Mapping:
        return "a mapping"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping of keys"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, source: str, key: str) -> Any:
    """Check `value` against the annotation `tp`; return it (ints accepted as floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, source, key)
            except ConfigError:
                continue
        raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
    elif dataclasses.is_dataclass(tp):
        return _build(tp, value, source, key)
    elif origin is tuple:
        if isinstance(value, list):
            item = typing.get_args(tp)[0]
            return tuple(_coerce(v, item, source, f"{key}[{i}]") for i, v in enumerate(value))
    elif tp is Mapping or (origin is not None and issubclass(origin, Mapping)):
        if isinstance(value, Mapping):
            return types.MappingProxyType(dict(value))
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")


def _check_rules(value: Any, meta: Mapping, source: str, key: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(source, key, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
    lo, hi, positive = meta.get("lo"), meta.get("hi"), meta.get("positive")
    if positive and value <= 0:
        raise ConfigError(source, key, f"expected a value > 0, got {value!r}")
    if lo is not None and value < lo:
        raise ConfigError(source, key, f"expected a value >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(source, key, f"expected a value <= {hi}, got {value!r}")


def _build(cls: type, raw: Any, source: str, prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from a mapping, naming the key of any problem."""
    where = prefix or "top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(source, prefix, f"expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    for name in raw:
        if name not in fields:
            known = ", ".join(fields)
            raise ConfigError(source, f"{prefix}.{name}" if prefix else str(name),
                              f"unknown key in {where} (known keys: {known})")
    values = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(source, key, "missing required key")
            continue
        value = _coerce(raw[name], hints[name], source, key)
        _check_rules(value, f.metadata, source, key)
        values[name] = value
    return cls(**values)


def _check_exchange(cfg: Config) -> None:
    url = cfg.exchange.base_url
    if url not in ("sim", *ENDPOINTS) and not url.startswith(("http://", "https://")):
        raise ConfigError(cfg.source, "exchange.base_url",
                          f"expected sim, testnet, live or an http(s):// URL, got {url!r}")
    c = cfg.credentials
    if (c.api_key or c.api_secret) and not cfg.exchange.is_sim:
        raise ConfigError(cfg.source, "credentials.api_secret" if c.api_secret else "credentials.api_key",
                          "inline API keys are allowed for the simulator only; use the environment "
                          f"({ENV_KEY}, {ENV_SECRET}) or credentials.secrets_file")


def _sim_credentials(cfg: Config) -> Credentials:
    """A simulator's keys: a secrets file's when one is named (checked like any other: a file
    others can read is refused), else the inline or demo keys; never the environment's."""
    if cfg.credentials.secrets_file:
        return _read_secrets_file(cfg.source, Path(cfg.credentials.secrets_file))
    return Credentials(cfg.credentials.api_key or SIM_DEMO_KEY, cfg.credentials.api_secret or SIM_DEMO_SECRET)


def is_loopback_url(url: str) -> bool:
    host = (urllib.parse.urlsplit(url).hostname or "").lower()
    return host == "localhost" or host == "::1" or host.startswith("127.")


def resolve_for_url(cfg: Config, exchange_url: str | None,
                    environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The key pair for trading on `exchange_url` (run's --exchange-url) instead of the config's
    exchange. A loopback URL is a simulator: it gets the config's inline or the demo keys, never
    the real ones from the environment or a secrets file."""
    if exchange_url and is_loopback_url(exchange_url):
        return _sim_credentials(cfg)
    return resolve_credentials(cfg, os.environ if environ is None else environ)


def resolve_credentials(cfg: Config, environ: Mapping[str, str]) -> Credentials | None:
    if cfg.exchange.is_sim:  # real keys in the environment never go to the local simulator
        return _sim_credentials(cfg)
    key, secret = environ.get(ENV_KEY), environ.get(ENV_SECRET)
    if bool(key) != bool(secret):
        missing = ENV_SECRET if key else ENV_KEY
        raise ConfigError(cfg.source, "credentials", f"{missing} is not set but its partner is")
    if key and secret:
        return Credentials(key, secret)
    path = cfg.credentials.secrets_file
    if path:
        return _read_secrets_file(cfg.source, Path(path))
    raise ConfigError(cfg.source, "credentials",
                      f"{cfg.exchange.base_url} trading needs an API key: set {ENV_KEY} and {ENV_SECRET} "
                      "or credentials.secrets_file")


def _read_secrets_file(source: str, path: Path) -> Credentials:
    key = "credentials.secrets_file"
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(source, key, f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(source, key, f"{path} is accessible by group/others (mode {stat.filemode(mode)}); "
                                       f"run: chmod 600 {path}")
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(source, key, f"{path} is not readable YAML ({type(exc).__name__})") from None
    if not isinstance(doc, Mapping) or not doc.get("api_key") or not doc.get("api_secret"):
        raise ConfigError(source, key, f"{path} must hold api_key and api_secret")
    return Credentials(str(doc["api_key"]), str(doc["api_secret"]))


def load(path: str | os.PathLike, environ: Mapping[str, str] | None = None, *,
         exchange_url: str | None = None) -> Config:
    """Read and validate a config file; credentials are resolved now (for `exchange_url` when
    it overrides the config's exchange) so a bad secrets file or a live config without keys
    fails at start, not at the first order."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(source, "", "config file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read config file: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(source, "", f"not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    cfg = dataclasses.replace(_build(Config, raw, source), source=source)
    log.register_secret(cfg.credentials.api_secret)
    _check_exchange(cfg)
    resolve_for_url(cfg, exchange_url, environ)
    return cfg
