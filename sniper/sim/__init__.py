"""BitMEX-compatible simulator: exchange model, history feed, HTTP/websocket server."""

from sniper.sim.exchange import Exchange, ExchangeError

__all__ = ["Exchange", "ExchangeError"]
