"""Orders: from a Target to orders at an exchange.

manager.py    pure decisions: (target, position, working orders, touch) -> actions
venue.py      the port an exchange is reached through
bitmex.py     the venue over REST and the websocket (the daemon)
local.py      the venue over an in-process sim Exchange (backtests, parity tests)
reconcile.py  journal and exchange agreeing: at start-up, every new session, every cycle
executor.py   the cycle that runs them, on its thread or stepped
"""
