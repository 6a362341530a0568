"""sniper: a live trading daemon for the BitMEX XBTUSD perpetual swap."""

__version__ = "0.1.0"
