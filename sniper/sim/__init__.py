"""BitMEX-compatible simulator: exchange model, history feed, HTTP/websocket server."""

from sniper.sim.exchange import Exchange
from sniper.sim.rows import ExchangeError

__all__ = ["Exchange", "ExchangeError"]
