"""The two fill models agree on a quiet window: the `bars` model's stated assumptions (market
orders at the close plus a 0.5 bp slippage, one tick at these prices) against the `book` model
(the daemon's order manager and risk gate on the simulator's exchange and feed), same strategy
and bars.

Tolerance, and why: the position is the same at every bar close, funding the same to the
satoshi (same position, same mark: the feed's last trade before a settlement is the bar's
close); fees within 0.1 % and the final equity within 2e-4 XBT of 1 XBT. The book's market orders
walk 0 to 2 ticks of a replayed book (an IOC sweeping two levels is two fills), the bars model
charges exactly one tick; over ~75 market fills of 1,000 contracts that is ~1e-4 XBT either way."""

from __future__ import annotations

import numpy as np
import pandas as pd
from test_backtest_engine import BUNDLED, cfg_with

from sniper.backtest.engine import run
from sniper.model import parse_time

QUIET = int(parse_time("2018-10-28T00:00:00Z")), int(parse_time("2018-10-28T06:00:00Z"))


def test_bars_and_book_agree_on_a_quiet_window():
    cfg = cfg_with("trend", trend={"fast_period": 30, "slow_period": 10, "style": "market"})
    bars = run(cfg, *BUNDLED, start=QUIET[0], end=QUIET[1], fill="bars")
    book = run(cfg, *BUNDLED, start=QUIET[0], end=QUIET[1], fill="book")
    assert bars.stats["trades"] >= 20  # the fast EMAs flip often: a real test of the fills
    np.testing.assert_array_equal(bars.equity["position"], book.equity["position"])
    pd.testing.assert_frame_equal(bars.funding, book.funding)
    assert set(book.fills["liquidity"]) == {"taker"}
    assert bars.fills["qty"].abs().sum() == book.fills["qty"].abs().sum()
    fees = bars.stats["fees_xbt"], book.stats["fees_xbt"]
    assert abs(fees[0] - fees[1]) <= 1e-3 * abs(fees[1]), fees
    end = bars.stats["end_equity_xbt"], book.stats["end_equity_xbt"]
    assert abs(end[0] - end[1]) <= 2e-4, end
    assert bars.stats["assumptions"].startswith("bars fill model") and "order manager" in book.stats["assumptions"]
