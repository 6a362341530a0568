"""Strategy objects: (bars, funding, account, clock) -> Decision; pure (see base.py).

`build` is the one place a configured strategy is made, for the daemon and the backtester.
"""

from __future__ import annotations

from .base import Account, Decision, Flat, Funding, OrFlat, Strategy
from .funding import FundingStrategy
from .motif import MotifStrategy
from .trend import TrendStrategy

__all__ = ["Account", "Decision", "Flat", "Funding", "FundingStrategy", "MotifStrategy", "OrFlat",
           "Strategy", "TrendStrategy", "build"]


def build(strategy_cfg, *, taker_fee: float, min_liquidation_distance: float = 0.15) -> Strategy:
    """The strategy `strategy_cfg.name` names (a config.StrategyConfig): flat, trend, funding
    (flat outside its windows) or motif (the switch over trend and funding). taker_fee: the
    fraction charged for taking liquidity; min_liquidation_distance: the risk limit's."""
    name = strategy_cfg.name
    if name == "flat":
        return Flat()
    trend = TrendStrategy(strategy_cfg.trend, taker_fee=taker_fee)
    if name == "trend":
        return trend
    funding = FundingStrategy(strategy_cfg.funding, taker_fee=taker_fee,
                              min_liquidation_distance=min_liquidation_distance)
    if name == "funding":
        return OrFlat(funding)
    if name == "motif":
        return MotifStrategy(strategy_cfg.motif, trend=trend, funding=funding, taker_fee=taker_fee)
    raise ValueError(f"strategy.name: unknown strategy {name!r}")
