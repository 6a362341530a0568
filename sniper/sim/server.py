"""The BitMEX-compatible simulator: aiohttp serving REST (`/api/v1`), the
websocket (`/realtime`) and a loopback-only control endpoint (`/_control`) over
one exchange model driven by recorded history.

Run it as `python -m sniper sim --port 0 ...` (prints its base URL as the first
stdout line, runs until SIGINT/SIGTERM), or in-process with `SimServer`, which
the daemon embeds. Everything touching the exchange runs on one asyncio loop:
the model is single-threaded by contract, so no locks are needed.

Two clocks: the simulated one (market data, order timestamps, funding) and the
real one (signature expiry, rate limits, fault durations), because clients sign
with real time whatever the replay speed.

The control endpoint steers the whole market, so it answers only what a program on this
machine sends on purpose: a loopback peer, a loopback Host (a DNS-rebinding page reaches
127.0.0.1 under its own name), no Origin (a browser names the page that sent the request)
and, for every POST and every request with a body, a JSON content type (a cross-site form or
fetch without a preflight can only send text/plain, form or multipart bodies).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import re
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from sniper import log as sniper_log
from sniper.clock import RealClock, SimClock
from sniper.config import SIM_DEMO_KEY, SIM_DEMO_SECRET
from sniper.history import HistoryError
from sniper.model import BUY, SELL, iso
from sniper.sim import feed as feed_mod
from sniper.sim.buckets import Buckets
from sniper.sim.exchange import Exchange
from sniper.sim.faults import Faults, RateLimiter
from sniper.sim.params import (
    BOOLEAN,
    DATE_TIME,
    INTEGER,
    NUMBER,
    TEXT,
    Invalid,
    choice,
    items,
    record,
    validate,
)
from sniper.sim.realtime import DEFAULT_MAX_BACKLOG, WS_PATH, Hub, serve_websocket
from sniper.sim.rest_api import RestApi, json_response

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_control"
FEED_TICK_S = 0.005  # how often the feed is stepped to the simulated clock
DEFAULT_RATE_LIMIT = 120  # requests per minute per key, BitMEX's default budget
DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE = -0.00025, 0.00075  # BitMEX XBTUSD's schedule of the data era
EXIT_OK, EXIT_USAGE = 0, 2
MAX_SPEED = 10_000.0  # x real time; beyond it the feed cannot keep up with the clock
MAX_L2_RATE = 100_000.0  # orderBookL2 messages per second the feed may be asked for
MAX_ADVANCE_S = 7 * 86400.0  # one clock jump (a replayed day costs the feed seconds of CPU)
SPEED = NUMBER.within(0, MAX_SPEED)
BALANCE_XBT = NUMBER.within(1e-8, 21e6)  # one satoshi to every bitcoin there will be
SIDE = choice(BUY, SELL)
# The simulator's options, checked wherever they come from (the command line, the daemon's
# config); a refusal names the option as the command line spells it.
OPTION_KINDS = {
    "host": TEXT, "port": INTEGER.within(0, 65535), "data": TEXT, "funding": TEXT, "speed": SPEED,
    "seed": INTEGER.within(0), "paused": BOOLEAN, "start": DATE_TIME, "l2_rate": NUMBER.within(0, MAX_L2_RATE),
    "rate_limit": INTEGER.within(0), "max_backlog": INTEGER.within(1), "maker_fee": NUMBER.within(-0.01, 0.01),
    "taker_fee": NUMBER.within(0, 0.01),
}
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]]+))(?::[0-9]+)?")


@dataclass
class SimOptions:
    host: str = "127.0.0.1"
    port: int = 0
    data: str | None = None  # 1-minute bars CSV(.gz); None = the bundled 2018 minutes
    funding: str | None = None  # funding CSV; None = the bundled rates
    speed: float = 1.0
    seed: int = 1
    accounts: list[tuple[str, str, float]] = field(default_factory=list)  # empty = the demo account
    paused: bool = False
    start: str | float | None = None  # ISO text or epoch seconds; None = feed.default_start (3 days before the end)
    l2_rate: float | None = None  # orderBookL2 messages per second; None = the feed's default
    rate_limit: int = DEFAULT_RATE_LIMIT  # 0 = unlimited
    max_backlog: int = DEFAULT_MAX_BACKLOG  # frames queued to one websocket client before it is cut off
    maker_fee: float = DEFAULT_MAKER_FEE  # fraction of the traded value; negative = a rebate
    taker_fee: float = DEFAULT_TAKER_FEE

    def __post_init__(self) -> None:
        """Convert each option by its kind (the command line hands over text); Invalid names
        the first one of the wrong type or range."""
        for name, kind in OPTION_KINDS.items():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, kind("--" + name.replace("_", "-"), value))


def _load(option: str, load, path):
    """`load(path)`, its HistoryError (which names the file, line and field) worded for `option`."""
    try:
        return load(path)
    except HistoryError as exc:
        raise ValueError(f"{option}: {exc}") from None


class Sim:
    """One simulator instance: exchange, feed, clocks, faults and the aiohttp app."""

    def __init__(self, opts: SimOptions) -> None:
        self.opts = opts
        bars = _load("--data", feed_mod.load_bars, opts.data or feed_mod.DEFAULT_BARS)
        funding = _load("--funding", feed_mod.load_funding, opts.funding or feed_mod.DEFAULT_FUNDING)
        self.real_clock = RealClock()
        self.speed = opts.speed
        self.paused = opts.paused
        self.clock = SimClock(feed_mod.default_start(bars) if opts.start is None else opts.start,
                              0.0 if self.paused else self.speed)
        span = feed_mod.replay_span(bars)  # the feed loops: bars, their history and funding repeat
        self.exchange = Exchange(feed_mod.instrument_for(bars), self.clock, funding=funding, funding_cycle=span,
                                 seed=opts.seed, maker_fee=opts.maker_fee, taker_fee=opts.taker_fee)
        for key, secret, balance in opts.accounts or [(SIM_DEMO_KEY, SIM_DEMO_SECRET, 1.0)]:
            self.exchange.add_account(key, secret, balance)
        feed_kwargs = {} if opts.l2_rate is None else {"l2_rate": opts.l2_rate}
        self.feed = feed_mod.Feed(self.exchange, bars, seed=opts.seed, loop=True, **feed_kwargs)
        self.buckets = Buckets(bars, self.exchange.symbol, period=span[1])
        self.faults = Faults(opts.seed)
        self.limiter = RateLimiter(opts.rate_limit) if opts.rate_limit else None
        self.counters: Counter = Counter()
        self.hub = Hub(self.exchange, self.faults, self.counters, self.clock, self.real_clock, opts.max_backlog)
        self.exchange.subscribe(self.hub.publish)
        self.rest = RestApi(self.exchange, self.buckets, clock=self.clock, real_clock=self.real_clock,
                            faults=self.faults, limiter=self.limiter, counters=self.counters)
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._driver: asyncio.Task | None = None

    # ---- lifecycle -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20)
        self.rest.install(app)
        app.router.add_get(WS_PATH, self._websocket)
        contract = self.exchange.contract
        price = NUMBER.within(contract.tick_size, contract.max_price)
        level = record({"side": SIDE, "price": price, "size": INTEGER.within(0)}, required=("side", "price", "size"))
        control = (  # method, path, handler, body schema, required fields
            ("POST", "/fault", self._c_fault, {"mode": TEXT, "seconds": NUMBER.within(0),
                                               "delay_ms": INTEGER.within(0), "share": NUMBER.within(0, 1),
                                               "after_commit": BOOLEAN}, ("mode",)),
            ("DELETE", "/fault", self._c_clear_faults, {}, ()),
            ("POST", "/feed", self._c_feed, {"speed": SPEED, "paused": BOOLEAN}, ()),
            ("POST", "/clock", self._c_clock, {"advance": NUMBER.within(0, MAX_ADVANCE_S), "feed": BOOLEAN}, ()),
            ("POST", "/book", self._c_book, {"clear": BOOLEAN, "levels": items(level)}, ()),
            ("POST", "/trade", self._c_trade, {"side": SIDE, "qty": INTEGER.within(1), "price": price},
             ("side", "qty")),
            ("POST", "/mark", self._c_mark, {"price": price}, ("price",)),
            ("POST", "/account", self._c_account, {"key": TEXT, "secret": TEXT, "balance_xbt": BALANCE_XBT},
             ("key", "secret")),
            ("GET", "/state", self._c_state, {}, ()),
        )
        for method, path, handler, schema, required in control:
            app.router.add_route(method, CONTROL_PREFIX + path, self._control(handler, schema, required))
        return app

    async def start(self) -> str:
        """Bind, start the feed driver; returns the base URL (http://host:port)."""
        self.feed.step_until(self.clock.now())  # a book and a price before the first client arrives
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.opts.host, self.opts.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        self._driver = asyncio.create_task(self._drive(), name="sim-feed")
        log.info("simulator on %s at %s (speed %sx%s)", self.url, iso(self.clock.now()), self.speed,
                 ", paused" if self.paused else "")
        return self.url

    async def stop(self) -> None:
        if self._driver is not None:
            self._driver.cancel()
            await asyncio.gather(self._driver, return_exceptions=True)
        await self.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _drive(self) -> None:
        """Step the feed to the simulated clock, forever (the market moves while unpaused)."""
        while True:
            if not self.paused:
                try:
                    self.feed.step_until(self.clock.now())
                except Exception:  # a feed bug must show, but must not freeze the market silently
                    log.exception("feed step failed")
                    await asyncio.sleep(1.0)
            await asyncio.sleep(FEED_TICK_S)

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        return await serve_websocket(request, self.hub)

    # ---- control endpoint ------------------------------------------------------------------------
    def _control(self, handler, schema: dict, required: tuple[str, ...]):
        """The control route of `handler`: the request is admitted (see the module docstring),
        its JSON body validated against `schema`, and only then handed over, so that a refused
        request (400, 403, 415) has changed nothing."""
        async def endpoint(request: web.Request) -> web.Response:
            refusal = _control_refusal(request)
            if refusal is not None:
                return json_response({"error": refusal[1]}, refusal[0])
            try:
                body = orjson.loads(await request.read() or b"{}")
            except orjson.JSONDecodeError as exc:
                return json_response({"error": f"the body is not JSON ({exc})"}, 400)
            if not isinstance(body, dict):
                return json_response({"error": "the body must be a JSON object"}, 400)
            try:
                return json_response(handler(validate(schema, body, required)))
            except ValueError as exc:  # Invalid, or a rule of the model (an unknown fault mode, a known key)
                return json_response({"error": str(exc)}, 400)

        return endpoint

    def _c_fault(self, body: dict) -> dict:
        mode, seconds = body["mode"], body.get("seconds")
        if mode == "drop":
            if seconds:  # keep refusing new websockets for a while
                self.faults.set("drop", seconds)
            return {"dropped": self.hub.drop_all(), "faults": self.faults.describe()}
        self.faults.set(mode, seconds, delay_ms=body.get("delay_ms", 0), share=body.get("share", 1.0),
                        after_commit=body.get("after_commit", False))
        return {"faults": self.faults.describe()}

    def _c_clear_faults(self, body: dict) -> dict:
        self.faults.clear()
        return {"faults": {}}

    def _c_feed(self, body: dict) -> dict:
        self.speed = body.get("speed", self.speed)
        self.paused = body.get("paused", self.paused)
        self.clock.set_speed(0.0 if self.paused else self.speed)
        return self._clock_state()

    def _c_clock(self, body: dict) -> dict:
        self.clock.advance(body.get("advance", 0.0))
        if body.get("feed"):
            self.feed.step_until(self.clock.now())
        else:
            self.exchange.advance()
        return self._clock_state()

    def _c_book(self, body: dict) -> dict:
        if body.get("clear"):
            self.exchange.clear_market_levels()
        levels = [(lv["side"], lv["price"], lv["size"]) for lv in body.get("levels", [])]
        if levels:
            self.exchange.set_levels(levels)
        return {"best_bid": self.exchange.best_bid(), "best_ask": self.exchange.best_ask()}

    def _c_trade(self, body: dict) -> dict:
        return {"trades": self.exchange.market_order(body["side"], body["qty"], body.get("price"))}

    def _c_mark(self, body: dict) -> dict:
        self.exchange.set_mark_price(body["price"])
        return {"markPrice": body["price"]}

    def _c_account(self, body: dict) -> dict:
        self.exchange.add_account(body["key"], body["secret"], body.get("balance_xbt", 1.0))
        return {"key": body["key"]}

    def _clock_state(self) -> dict:
        now = self.clock.now()
        return {"time": now, "timestamp": iso(now), "paused": self.paused, "speed": self.speed}

    def _c_state(self, body: dict) -> dict:
        counters = self.counters
        return {
            **self._clock_state(),
            "ws_clients": len(self.hub.connections),
            "ws_backlog": max((c.backlog for c in self.hub.connections), default=0),
            "orders_placed": counters["orders_placed"],
            "messages_sent": counters["messages_sent"],
            "counters": dict(counters),
            "subscriptions": self.hub.subscription_counts(),
            "faults": self.faults.describe(),
            "best_bid": self.exchange.best_bid(),
            "best_ask": self.exchange.best_ask(),
            "rate_limit": self.limiter.limit if self.limiter else 0,
            "rate_limit_budgets": self.limiter.budgets if self.limiter else 0,
            "accounts": {key: self.exchange.account_state(key) for key in self.exchange.accounts()},
        }


def _control_refusal(request: web.Request) -> tuple[int, str] | None:
    """(status, reason) when a control request is not one a program on this machine sent on
    purpose (see the module docstring); None to admit it."""
    if not _is_loopback(request.remote or ""):
        return 403, "the control endpoint answers loopback clients only"
    if not _is_loopback_host(request.host):
        return 403, f"the control endpoint answers for a loopback Host only, not {request.host!r}"
    if "Origin" in request.headers:
        return 403, "the control endpoint refuses requests sent by web pages (they carry an Origin)"
    if (request.method == "POST" or request.can_read_body) and request.content_type != "application/json":
        return 415, f"the control endpoint takes application/json bodies, not {request.content_type}"
    return None


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _is_loopback_host(host: str) -> bool:
    """Is a Host header (name or address, optional port) this machine's loopback?"""
    match = _HOST.fullmatch(host)
    if match is None:
        return False
    name = match["v6"] or match["name"]
    return name.lower() == "localhost" or _is_loopback(name)


class SimServer:
    """The simulator on its own event loop in a background thread (the daemon's `sim` mode).

    `start()` returns the base URL once it is listening; `stop()` shuts it down.
    Keyword arguments are those of `SimOptions`.
    """

    def __init__(self, **options) -> None:
        self.options = SimOptions(**options)
        self.url: str | None = None
        self.sim: Sim | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 60.0) -> str:
        self._thread = threading.Thread(target=self._run, name="sim-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"simulator did not start within {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self.url

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            log.exception("simulator stopped on an error")
        finally:
            self._ready.set()
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self.sim = Sim(self.options)
        self.url = await self.sim.start()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.sim.stop()

    def call(self, fn, *args, timeout: float = 10.0):
        """Run `fn(*args)` on the simulator's loop (the only thread allowed to touch the exchange)."""
        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)


# ---- command line ------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _account(text: str) -> tuple[str, str, float]:
    key, sep, rest = text.partition(":")
    secret, sep2, balance = rest.rpartition(":")
    expected = "KEY:SECRET:BALANCE_XBT"
    if not (sep and sep2 and key and secret):
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    try:
        return key, secret, BALANCE_XBT("balance", balance)
    except Invalid as exc:
        raise argparse.ArgumentTypeError(f"expected {expected} with a balance of {exc.expected} XBT, "
                                         f"got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    """The options as text: SimOptions converts and checks them (one check for the command line
    and the daemon's embedded simulator alike)."""
    p = _Parser(prog="sniper sim", description=(
        "BitMEX-compatible exchange simulator on loopback: REST /api/v1, websocket /realtime and a "
        "control endpoint /_control. Prints its base URL as the first line; stops on SIGINT/SIGTERM."))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", default=0, help="port (default 0 = any free port)")
    p.add_argument("--data", help="1-minute bars CSV(.gz) to replay (default: the bundled 2018-08-20..11-22 minutes)")
    p.add_argument("--funding", help="funding-rate CSV (default: the bundled rates)")
    p.add_argument("--speed", default=1.0, help=f"x real time, 0 to {MAX_SPEED:,.0f} (default 1)")
    p.add_argument("--seed", default=1, help="seed of the simulated book and trades")
    p.add_argument("--account", type=_account, action="append", default=[], metavar="KEY:SECRET:BALANCE_XBT",
                   help="an account (repeatable); none = the demo account of configs/sim.yaml")
    p.add_argument("--paused", action="store_true", help="start with the market frozen (see POST /_control/feed)")
    p.add_argument("--start", help="simulated start time, ISO-8601 or epoch seconds "
                                   "(default: 3 days before the data's end)")
    p.add_argument("--l2-rate", help="orderBookL2 messages per second")
    p.add_argument("--rate-limit", default=DEFAULT_RATE_LIMIT,
                   help=f"REST requests per minute per key (default {DEFAULT_RATE_LIMIT}; 0 = unlimited)")
    p.add_argument("--max-backlog", default=DEFAULT_MAX_BACKLOG,
                   help=f"frames queued to one websocket client before it is disconnected as too slow "
                        f"(default {DEFAULT_MAX_BACKLOG:,})")
    p.add_argument("--maker-fee", default=DEFAULT_MAKER_FEE,
                   help=f"maker fee as a fraction of value, negative = rebate (default {DEFAULT_MAKER_FEE})")
    p.add_argument("--taker-fee", default=DEFAULT_TAKER_FEE,
                   help=f"taker fee as a fraction of value (default {DEFAULT_TAKER_FEE})")
    p.add_argument("--log-level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


async def _serve_until_signal(opts: SimOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the URL is out: a caller may signal at once
        loop.add_signal_handler(sig, stop.set)
    sim = Sim(opts)
    url = await sim.start()
    print(url, flush=True)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m sniper sim ...`: serve until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad input
    (one stderr line naming the option and what it expects)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    sniper_log.setup(args.log_level)
    try:
        opts = SimOptions(host=args.host, port=args.port, data=args.data, funding=args.funding, speed=args.speed,
                          seed=args.seed, accounts=args.account, paused=args.paused, start=args.start,
                          l2_rate=args.l2_rate, rate_limit=args.rate_limit, max_backlog=args.max_backlog,
                          maker_fee=args.maker_fee, taker_fee=args.taker_fee)
        asyncio.run(_serve_until_signal(opts))
    except ValueError as exc:  # Invalid (an option), a data file's refusal (--data, --funding)
        print(f"sniper sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # the address cannot be listened on
        print(f"sniper sim: --host/--port: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})",
              file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
