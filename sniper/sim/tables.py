"""Websocket table metadata, so every `partial` carries the same `keys`, `types`,
`foreignKeys` and `attributes` BitMEX sends; clients (ours included) key their
tables on these, so they must not drift from the real exchange.

Column types follow the official schema (swagger.json definitions, `int64` ->
"long", `double` -> "float", `date-time` -> "timestamp", intervals ->
"timespan"); a field a row carries beyond the schema gets a type inferred from
its value, as BitMEX's own partials list every column they send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_CODES = {"": "symbol", "l": "long", "f": "float", "t": "timestamp", "s": "timespan", "g": "guid",
          "b": "boolean", "a": "any"}

_COLUMNS = {
    "orderBookL2": "symbol id:l side size:l price:f timestamp:t",
    "quote": "timestamp:t symbol bidSize:l bidPrice:f askPrice:f askSize:l",
    "trade": ("timestamp:t symbol side size:l price:f tickDirection trdMatchID:g grossValue:l homeNotional:f "
              "foreignNotional:f trdType"),
    "instrument": (
        "symbol rootSymbol state typ listing:t front:t expiry:t settle:t listedSettle:t positionCurrency "
        "underlying quoteCurrency underlyingSymbol reference referenceSymbol calcInterval:s publishInterval:s "
        "publishTime:t maxOrderQty:l maxPrice:f lotSize:l tickSize:f multiplier:l settlCurrency "
        "underlyingToPositionMultiplier:l underlyingToSettleMultiplier:l quoteToSettleMultiplier:l isQuanto:b "
        "isInverse:b initMargin:f maintMargin:f riskLimit:l riskStep:l limit:f taxed:b deleverage:b makerFee:f "
        "takerFee:f settlementFee:f fundingBaseSymbol fundingQuoteSymbol fundingPremiumSymbol "
        "fundingTimestamp:t fundingInterval:s fundingRate:f indicativeFundingRate:f rebalanceTimestamp:t "
        "rebalanceInterval:s prevClosePrice:f limitDownPrice:f limitUpPrice:f totalVolume:l volume:l "
        "volume24h:l prevTotalTurnover:l totalTurnover:l turnover:l turnover24h:l homeNotional24h:f "
        "foreignNotional24h:f prevPrice24h:f vwap:f highPrice:f lowPrice:f lastPrice:f lastPriceProtected:f "
        "lastTickDirection lastChangePcnt:f bidPrice:f midPrice:f askPrice:f impactBidPrice:f impactMidPrice:f "
        "impactAskPrice:f hasLiquidity:b openInterest:l openValue:l fairMethod fairBasisRate:f fairBasis:f "
        "fairPrice:f markMethod markPrice:f indicativeSettlePrice:f settledPriceAdjustmentRate:f settledPrice:f "
        "instantPnl:b minTick:f timestamp:t"),
    "funding": "timestamp:t symbol fundingInterval:s fundingRate:f fundingRateDaily:f",
    "liquidation": "orderID:g symbol side price:f leavesQty:l",
    "order": (
        "orderID:g clOrdID clOrdLinkID account:l symbol side orderQty:l price:f displayQty:l stopPx:f "
        "pegOffsetValue:f pegPriceType currency settlCurrency ordType timeInForce execInst contingencyType "
        "ordStatus triggered workingIndicator:b ordRejReason leavesQty:l cumQty:l avgPx:f text transactTime:t "
        "timestamp:t"),
    "execution": (
        "execID:g orderID:g clOrdID clOrdLinkID account:l symbol side lastQty:l lastPx:f lastLiquidityInd "
        "orderQty:l price:f displayQty:l stopPx:f pegOffsetValue:f pegPriceType currency settlCurrency execType "
        "ordType timeInForce execInst contingencyType ordStatus triggered workingIndicator:b ordRejReason "
        "leavesQty:l cumQty:l avgPx:f commission:f feeType tradePublishIndicator text trdMatchID:g execCost:l "
        "execComm:l homeNotional:f foreignNotional:f transactTime:t timestamp:t"),
    "position": (
        "account:l symbol currency underlying quoteCurrency commission:f initMarginReq:f maintMarginReq:f "
        "riskLimit:l leverage:f crossMargin:b deleveragePercentile:f rebalancedPnl:l prevRealisedPnl:l "
        "prevUnrealisedPnl:l openingQty:l openOrderBuyQty:l openOrderBuyCost:l openOrderBuyPremium:l "
        "openOrderSellQty:l openOrderSellCost:l openOrderSellPremium:l currentQty:l currentCost:l currentComm:l "
        "realisedCost:l unrealisedCost:l grossOpenPremium:l isOpen:b markPrice:f markValue:l riskValue:l "
        "homeNotional:f foreignNotional:f posState posCost:l posCross:l posComm:l posLoss:l posMargin:l "
        "posMaint:l initMargin:l maintMargin:l realisedPnl:l unrealisedPnl:l unrealisedPnlPcnt:f "
        "unrealisedRoePcnt:f avgCostPrice:f avgEntryPrice:f breakEvenPrice:f marginCallPrice:f "
        "liquidationPrice:f bankruptPrice:f timestamp:t"),
    "margin": (
        "account:l currency riskLimit:l state amount:l prevRealisedPnl:l grossComm:l grossOpenCost:l "
        "grossOpenPremium:l grossExecCost:l grossMarkValue:l riskValue:l initMargin:l maintMargin:l "
        "targetExcessMargin:l realisedPnl:l unrealisedPnl:l walletBalance:l marginBalance:l marginLeverage:f "
        "marginUsedPcnt:f excessMargin:l availableMargin:l withdrawableMargin:l makerFeeDiscount:f "
        "takerFeeDiscount:f timestamp:t"),
    "wallet": (
        "account:l currency deposited:l withdrawn:l transferIn:l transferOut:l amount:l pendingCredit:l "
        "pendingDebit:l confirmedDebit:l timestamp:t"),
}
_COLUMNS["orderBookL2_25"] = _COLUMNS["orderBookL2"]


@dataclass(frozen=True)
class Table:
    """What a BitMEX partial says about a table besides its rows."""

    name: str
    keys: tuple[str, ...]
    foreign_keys: dict
    attributes: dict
    private: bool
    types: dict

    def types_for(self, rows: list[dict]) -> dict:
        """Schema types plus an inferred type for any extra column the rows carry."""
        extra = {k: _infer(v) for row in rows for k, v in row.items() if k not in self.types}
        return {**self.types, **extra} if extra else self.types


_ISO_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d")
_GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _infer(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        if _ISO_RE.match(value):
            return "timestamp"
        return "guid" if _GUID_RE.match(value) else "symbol"
    return "any" if isinstance(value, (list, dict)) else "symbol"


def _table(name, keys, foreign_keys, attributes, private=False) -> Table:
    types = {}
    for spec in _COLUMNS[name].split():
        field, _, code = spec.partition(":")
        types[field] = _CODES[code]
    return Table(name, tuple(keys), foreign_keys, attributes, private, types)


_BOOK_ATTRS = {"symbol": "parted", "id": "sorted"}
_TIMED_ATTRS = {"timestamp": "sorted", "symbol": "grouped"}
_ACCOUNT_ATTRS = {"account": "sorted", "currency": "grouped"}
_ORDER_FK = {"symbol": "instrument", "side": "side", "ordStatus": "ordStatus"}

TABLES: dict[str, Table] = {t.name: t for t in (
    _table("orderBookL2", ["symbol", "id", "side"], {"symbol": "instrument", "side": "side"}, _BOOK_ATTRS),
    _table("orderBookL2_25", ["symbol", "id", "side"], {"symbol": "instrument", "side": "side"}, _BOOK_ATTRS),
    _table("quote", [], {"symbol": "instrument"}, _TIMED_ATTRS),
    _table("trade", [], {"symbol": "instrument", "side": "side"}, _TIMED_ATTRS),
    _table("instrument", ["symbol"], {"inverseLeg": "instrument", "underlying": "currency",
                                      "quoteCurrency": "currency", "settlCurrency": "currency"},
           {"symbol": "unique"}),
    _table("funding", ["timestamp", "symbol"], {"symbol": "instrument"}, _TIMED_ATTRS),
    _table("liquidation", ["orderID"], {"symbol": "instrument", "side": "side"}, {"orderID": "grouped"}),
    _table("order", ["orderID"], _ORDER_FK,
           {"orderID": "grouped", "account": "grouped", "ordStatus": "grouped", "workingIndicator": "grouped"},
           private=True),
    _table("execution", ["execID"], _ORDER_FK,
           {"execID": "grouped", "account": "grouped", "execType": "grouped", "transactTime": "sorted"},
           private=True),
    _table("position", ["account", "symbol", "currency"], {"symbol": "instrument"},
           {"account": "sorted", "symbol": "grouped", "currency": "grouped", "underlying": "grouped",
            "quoteCurrency": "grouped"}, private=True),
    _table("margin", ["account", "currency"], {}, _ACCOUNT_ATTRS, private=True),
    _table("wallet", ["account", "currency"], {}, _ACCOUNT_ATTRS, private=True),
)}

# Tables whose rows belong to one symbol (a `:SYMBOL` suffix filters them).
SYMBOL_TABLES = frozenset({"orderBookL2", "orderBookL2_25", "quote", "trade", "instrument", "funding",
                           "liquidation", "order", "execution", "position"})
# What BitMEX lists when refusing an account-locked subscription.
ACCOUNT_LOCKED_NOTE = ("Account-locked tables include the following: account,affiliate,execution,margin,order,"
                       "position,privateNotifications,transact,wallet")


def partial(table: str, rows: list[dict], filter_: dict) -> dict:
    """The full `partial` message for `table` (key order as BitMEX sends it)."""
    meta = TABLES[table]
    return {
        "table": table,
        "action": "partial",
        "keys": list(meta.keys),
        "types": meta.types_for(rows),
        "foreignKeys": meta.foreign_keys,
        "attributes": meta.attributes,
        "filter": filter_,
        "data": rows,
    }
