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
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from sniper import log as sniper_log
from sniper.clock import RealClock, SimClock
from sniper.config import SIM_DEMO_KEY, SIM_DEMO_SECRET
from sniper.model import iso, parse_time
from sniper.sim import feed as feed_mod
from sniper.sim.buckets import Buckets
from sniper.sim.exchange import Exchange
from sniper.sim.faults import Faults, RateLimiter
from sniper.sim.realtime import DEFAULT_MAX_BACKLOG, WS_PATH, Hub, serve_websocket
from sniper.sim.rest_api import RestApi, json_response

log = logging.getLogger(__name__)

CONTROL_PREFIX = "/_control"
FEED_TICK_S = 0.005  # how often the feed is stepped to the simulated clock
DEFAULT_RATE_LIMIT = 120  # requests per minute per key, BitMEX's default budget
DEFAULT_MAKER_FEE, DEFAULT_TAKER_FEE = -0.00025, 0.00075  # BitMEX XBTUSD's schedule of the data era
EXIT_OK, EXIT_USAGE = 0, 2


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


class Sim:
    """One simulator instance: exchange, feed, clocks, faults and the aiohttp app."""

    def __init__(self, opts: SimOptions) -> None:
        if opts.speed < 0:
            raise ValueError(f"speed must be >= 0, got {opts.speed}")
        self.opts = opts
        bars = feed_mod.load_bars(opts.data or feed_mod.DEFAULT_BARS)
        funding = feed_mod.load_funding(opts.funding or feed_mod.DEFAULT_FUNDING)
        start = parse_time(opts.start)
        self.real_clock = RealClock()
        self.speed = float(opts.speed)
        self.paused = bool(opts.paused)
        self.clock = SimClock(feed_mod.default_start(bars) if start is None else start,
                              0.0 if self.paused else self.speed)
        if not (-0.01 <= opts.maker_fee <= 0.01 and 0 <= opts.taker_fee <= 0.01):
            raise ValueError(f"fees must be fractions (maker -0.01..0.01, taker 0..0.01), got maker "
                             f"{opts.maker_fee} taker {opts.taker_fee}")
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
        if opts.max_backlog < 1:
            raise ValueError(f"max_backlog must be >= 1, got {opts.max_backlog}")
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
        control = (
            ("POST", "/fault", self._c_fault), ("DELETE", "/fault", self._c_clear_faults),
            ("POST", "/feed", self._c_feed), ("POST", "/clock", self._c_clock), ("POST", "/book", self._c_book),
            ("POST", "/trade", self._c_trade), ("POST", "/mark", self._c_mark), ("POST", "/account", self._c_account),
            ("GET", "/state", self._c_state),
        )
        for method, path, handler in control:
            app.router.add_route(method, CONTROL_PREFIX + path, self._control(handler))
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
    def _control(self, handler):
        async def endpoint(request: web.Request) -> web.Response:
            try:
                loopback = ipaddress.ip_address(request.remote or "").is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                return json_response({"error": "the control endpoint answers loopback clients only"}, 403)
            try:
                body = await request.json() if request.can_read_body else {}
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                return json_response(handler(body))
            except (ValueError, TypeError, KeyError) as exc:
                return json_response({"error": f"{type(exc).__name__}: {exc}"}, 400)

        return endpoint

    def _c_fault(self, body: dict) -> dict:
        mode = body.get("mode")
        seconds = body.get("seconds")
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
        if "speed" in body:
            speed = float(body["speed"])
            if speed < 0:
                raise ValueError("speed must be >= 0")
            self.speed = speed
        if "paused" in body:
            self.paused = bool(body["paused"])
        self.clock.set_speed(0.0 if self.paused else self.speed)
        return self._clock_state()

    def _c_clock(self, body: dict) -> dict:
        self.clock.advance(float(body.get("advance", 0)))
        if body.get("feed"):
            self.feed.step_until(self.clock.now())
        else:
            self.exchange.advance()
        return self._clock_state()

    def _c_book(self, body: dict) -> dict:
        if body.get("clear"):
            self.exchange.clear_market_levels()
        levels = [(lv["side"], float(lv["price"]), int(lv["size"])) for lv in body.get("levels", [])]
        if levels:
            self.exchange.set_levels(levels)
        return {"best_bid": self.exchange.best_bid(), "best_ask": self.exchange.best_ask()}

    def _c_trade(self, body: dict) -> dict:
        price = body.get("price")
        trades = self.exchange.market_order(body["side"], int(body["qty"]), None if price is None else float(price))
        return {"trades": trades}

    def _c_mark(self, body: dict) -> dict:
        self.exchange.set_mark_price(float(body["price"]))
        return {"markPrice": float(body["price"])}

    def _c_account(self, body: dict) -> dict:
        self.exchange.add_account(str(body["key"]), str(body["secret"]), float(body.get("balance_xbt", 1.0)))
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
        }


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
    if not (sep and sep2 and key and secret):
        raise argparse.ArgumentTypeError(f"expected KEY:SECRET:BALANCE_XBT, got {text!r}")
    try:
        value = float(balance)
    except ValueError:
        raise argparse.ArgumentTypeError(f"balance must be a number of XBT, got {balance!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"balance must be > 0 XBT, got {balance!r}")
    return key, secret, value


def _non_negative(kind):
    def parse(text: str):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sniper sim", description=(
        "BitMEX-compatible exchange simulator on loopback: REST /api/v1, websocket /realtime and a "
        "control endpoint /_control. Prints its base URL as the first line; stops on SIGINT/SIGTERM."))
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0 = any free port)")
    p.add_argument("--data", help="1-minute bars CSV(.gz) to replay (default: the bundled 2018-08-20..11-22 minutes)")
    p.add_argument("--funding", help="funding-rate CSV (default: the bundled rates)")
    p.add_argument("--speed", type=_non_negative(float), default=1.0, help="x real time (default 1)")
    p.add_argument("--seed", type=_non_negative(int), default=1, help="seed of the simulated book and trades")
    p.add_argument("--account", type=_account, action="append", default=[], metavar="KEY:SECRET:BALANCE_XBT",
                   help="an account (repeatable); none = the demo account of configs/sim.yaml")
    p.add_argument("--paused", action="store_true", help="start with the market frozen (see POST /_control/feed)")
    p.add_argument("--start", help="simulated start time, ISO-8601 or epoch seconds "
                                   "(default: 3 days before the data's end)")
    p.add_argument("--l2-rate", type=_non_negative(float), help="orderBookL2 messages per second")
    p.add_argument("--rate-limit", type=_non_negative(int), default=DEFAULT_RATE_LIMIT,
                   help=f"REST requests per minute per key (default {DEFAULT_RATE_LIMIT}; 0 = unlimited)")
    p.add_argument("--max-backlog", type=_non_negative(int), default=DEFAULT_MAX_BACKLOG,
                   help=f"frames queued to one websocket client before it is disconnected as too slow "
                        f"(default {DEFAULT_MAX_BACKLOG:,})")
    p.add_argument("--maker-fee", type=float, default=DEFAULT_MAKER_FEE,
                   help=f"maker fee as a fraction of value, negative = rebate (default {DEFAULT_MAKER_FEE})")
    p.add_argument("--taker-fee", type=float, default=DEFAULT_TAKER_FEE,
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
    """`python -m sniper sim ...`: serve until SIGINT/SIGTERM; 0 on a clean stop, 2 on bad input."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    sniper_log.setup(args.log_level)
    opts = SimOptions(host=args.host, port=args.port, data=args.data, funding=args.funding, speed=args.speed,
                      seed=args.seed, accounts=args.account, paused=args.paused, start=args.start,
                      l2_rate=args.l2_rate, rate_limit=args.rate_limit, max_backlog=args.max_backlog,
                      maker_fee=args.maker_fee, taker_fee=args.taker_fee)
    try:
        asyncio.run(_serve_until_signal(opts))
    except (OSError, ValueError) as exc:
        print(f"sniper sim: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
