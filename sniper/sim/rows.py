"""What the simulator says, in BitMEX's words and shapes: texts and error bodies, the row
of every table it serves, and history paging (timestamps are model.iso's). Pure: each row function
maps model state to the dict BitMEX would send, so REST and the websocket agree field
for field.
"""

from __future__ import annotations

import bisect

from sniper.model import BUY, FILLED, SATOSHI, SELL, iso, parse_time
from sniper.sim.margin import Contract, Margins, avg_entry_price

INSTRUMENT_INDEX = 88  # legacy orderBookL2 ids: 1e8 * index - price * 100
FUNDING_INTERVAL = "2000-01-01T08:00:00.000Z"  # BitMEX writes the 8-hour interval as a timestamp
NO_ORDER = "00000000-0000-0000-0000-000000000000"  # the orderID of a funding execution
# The span of BitMEX's timestamp text, whose years have four digits (1000-01-01T00:00:00.000Z to
# 9999-12-31T23:59:59.999Z): a time outside it cannot be written back to a client, so it is
# refused where it comes in.
FIRST_TIMESTAMP, LAST_TIMESTAMP = -30610224000.0, 253402300799.999

# BitMEX texts, kept verbatim in one place.
TEXT_SUBMITTED = "Submitted via API."
TEXT_CANCELED = "Canceled via API."
TEXT_AMENDED = "Amended via API."
TEXT_POST_ONLY = "Canceled: Order had execInst of ParticipateDoNotInitiate"
TEXT_REDUCE_ONLY = "Canceled: Order had execInst of ReduceOnly"
TEXT_REDUCE_ONLY_AMENDED = "Amended orderQty: Order had execInst of ReduceOnly"
TEXT_CLOSE = "Canceled: Order had execInst of Close"
TEXT_IOC = "Canceled: Order had timeInForce of ImmediateOrCancel"
TEXT_FOK = "Canceled: Order had timeInForce of FillOrKill"
TEXT_NO_LIQUIDITY = "Canceled: Market order had no more liquidity to fill against"
TEXT_CANCEL_ALL_AFTER = "Canceled: Cancel-all-after timer expired"
TEXT_LIQUIDATION = "Liquidation"
TEXT_LIQUIDATION_CANCEL = "Canceled: Position liquidated"
ERR_DUPLICATE = "Duplicate clOrdID"
ERR_NOT_FOUND = "Not Found"
ERR_INVALID_STATUS = "Invalid ordStatus"
ERR_BALANCE = "Account has insufficient Available Balance, {need} XBt required"
ERR_CANCEL_STATE = "Unable to cancel order due to existing state: {status}"
ERR_TIMEOUT = "Invalid timeout"


class ExchangeError(Exception):
    """A rejection the server turns into `{"error": {"message", "name"}}` with `status`."""

    def __init__(self, status: int, message: str, name: str = "HTTPError") -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message

    def body(self) -> dict:
        return {"error": {"message": self.message, "name": self.name}}


# ------------------------------------------------------------------ history paging
def query_rows(rows, times, count=100, start=0, reverse=False, startTime=None, endTime=None) -> list[dict]:
    """BitMEX history-query semantics over rows sorted by time (`times` parallel list):
    the window [startTime, endTime], then `start` rows skipped from the near end
    (the newest when `reverse`), then at most `count` rows."""
    lo = 0 if parse_time(startTime) is None else bisect.bisect_left(times, parse_time(startTime))
    hi = len(times) if parse_time(endTime) is None else bisect.bisect_right(times, parse_time(endTime))
    count = max(0, int(count if count is not None else 100))
    start = max(0, int(start or 0))
    if reverse:
        end = hi - start
        sel = range(end - 1, max(lo, end - count) - 1, -1)
    else:
        begin = lo + start
        sel = range(begin, min(hi, begin + count))
    return [dict(rows[i]) for i in sel]


# ------------------------------------------------------------------ market data
def level_id(price: float) -> int:
    """The orderBookL2 id of a price level (BitMEX's legacy formula for XBTUSD)."""
    return SATOSHI * INSTRUMENT_INDEX - int(round(price * 100))


def level_row(symbol: str, side: str, price: float, size: int | None = None, ts: str = "") -> dict:
    """An orderBookL2 row in BitMEX's field order; without a size, the fields a delete sends."""
    if size is None:
        return {"symbol": symbol, "id": level_id(price), "side": side, "price": price}
    return {"symbol": symbol, "id": level_id(price), "side": side, "size": size, "price": price, "timestamp": ts}


def quote_row(symbol: str, ts: str, bid: float | None, bid_size: int | None, ask: float | None,
              ask_size: int | None) -> dict:
    return {"timestamp": ts, "symbol": symbol, "bidSize": bid_size, "bidPrice": bid, "askPrice": ask,
            "askSize": ask_size}


def trade_row(symbol: str, ts: str, side: str, size: int, price: float, direction: str, match_id: str,
              gross: int) -> dict:
    return {
        "timestamp": ts, "symbol": symbol, "side": side, "size": size, "price": price,
        "tickDirection": direction, "trdMatchID": match_id, "grossValue": gross, "homeNotional": size / price,
        "foreignNotional": float(size), "trdType": "Regular",
    }


def funding_row(symbol: str, t: float, rate: float) -> dict:
    return {"timestamp": iso(t), "symbol": symbol, "fundingInterval": FUNDING_INTERVAL, "fundingRate": rate,
            "fundingRateDaily": rate * 3}


# ------------------------------------------------------------------ orders and executions
def order_row(o, symbol: str) -> dict:
    """The order table's row of `o` (a matching.Order)."""
    ts = iso(o.updated)
    return {
        "orderID": o.id, "clOrdID": o.clid, "clOrdLinkID": "", "account": o.acct.number,
        "symbol": symbol, "side": o.side, "simpleOrderQty": None, "orderQty": o.qty,
        "price": o.price, "displayQty": None, "stopPx": None, "pegOffsetValue": None,
        "pegPriceType": "", "currency": "USD", "settlCurrency": "XBt", "ordType": o.ord_type,
        "timeInForce": o.tif, "execInst": o.exec_inst, "contingencyType": "", "exDestination": "XBME",
        "ordStatus": o.status, "triggered": "", "workingIndicator": o.is_open, "ordRejReason": "",
        "simpleLeavesQty": None, "leavesQty": o.leaves, "simpleCumQty": None, "cumQty": o.cum,
        "avgPx": round(o.cum / o.inv_sum, 4) if o.cum else None,
        "multiLegReportingType": "SingleSecurity", "text": o.text, "transactTime": ts, "timestamp": ts,
    }


def execution_row(o, symbol: str, exec_id: str, exec_type: str) -> dict:
    """An execution that changed `o` without trading (New, Canceled, Replaced)."""
    row = order_row(o, symbol)
    row.update(
        execID=exec_id, execType=exec_type, lastQty=0, lastPx=None, underlyingLastPx=None,
        lastMkt="", lastLiquidityInd="", commission=None, tradePublishIndicator="",
        trdMatchID="", execCost=0, execComm=0, homeNotional=None, foreignNotional=None,
    )
    return row


def fill_row(o, symbol: str, exec_id: str, qty: int, price: float, *, maker: bool, rate: float, match_id: str,
             cost: int, comm: int) -> dict:
    """The Trade execution of `qty` contracts of `o` at `price`."""
    row = execution_row(o, symbol, exec_id, "Trade")
    signed = qty if o.side == BUY else -qty
    row.update(
        lastQty=qty, lastPx=price, lastMkt="XBME",
        lastLiquidityInd="AddedLiquidity" if maker else "RemovedLiquidity", commission=rate,
        tradePublishIndicator="PublishTrade", trdMatchID=match_id, execCost=cost, execComm=comm,
        homeNotional=signed / price, foreignNotional=float(-signed),
    )
    return row


def funding_execution_row(acct, symbol: str, exec_id: str, ts: str, mark: float, rate: float, value: int,
                          paid: int) -> dict:
    """The Funding execution of a settlement: `paid` XBt (> 0 paid by the account) on a
    position worth `value` at `mark`; BitMEX reports the rate as the commission."""
    q = acct.qty
    return {
        "execID": exec_id, "orderID": NO_ORDER, "clOrdID": "", "clOrdLinkID": "", "account": acct.number,
        "symbol": symbol, "side": "", "lastQty": q, "lastPx": mark, "underlyingLastPx": None, "lastMkt": "XBME",
        "lastLiquidityInd": "", "orderQty": q, "price": mark, "displayQty": None, "stopPx": None,
        "currency": "USD", "settlCurrency": "XBt", "execType": "Funding", "ordType": "Funding",
        "timeInForce": "", "execInst": "", "ordStatus": FILLED, "workingIndicator": False,
        "ordRejReason": "", "leavesQty": 0, "cumQty": q, "avgPx": mark, "commission": rate,
        "tradePublishIndicator": "", "text": "Funding", "trdMatchID": "", "execCost": 0,
        "execComm": paid, "homeNotional": -value / SATOSHI if q > 0 else value / SATOSHI,
        "foreignNotional": float(q), "transactTime": ts, "timestamp": ts,
    }


# ------------------------------------------------------------------ account tables
def position_row(acct, m: Margins, c: Contract, ts: str, *, imr: float, last_price: float | None,
                 mark_price: float | None, break_even: float | None) -> dict:
    """The position table's row of an account (an accounts.Account) with margins `m`."""
    q, cost = acct.qty, acct.cost
    entry = avg_entry_price(q, cost)
    opens = acct.open.values()
    buy_open = sum(o.leaves for o in opens if o.side == BUY)
    sell_open = sum(o.leaves for o in opens if o.side == SELL)
    buy_cost = sum(o.leaves * SATOSHI / o.price for o in opens if o.side == BUY and o.price)
    sell_cost = sum(o.leaves * SATOSHI / o.price for o in opens if o.side == SELL and o.price)
    return {
        "account": acct.number, "symbol": c.symbol, "currency": "XBt", "underlying": "XBT",
        "quoteCurrency": "USD", "commission": c.taker_fee, "initMarginReq": imr,
        "maintMarginReq": c.maint_margin, "riskLimit": c.risk_limit,
        "leverage": 1.0 / c.init_margin if acct.cross else acct.leverage,
        "crossMargin": acct.cross, "deleveragePercentile": None, "rebalancedPnl": 0,
        "prevRealisedPnl": 0, "prevUnrealisedPnl": 0, "prevClosePrice": last_price,
        "openingTimestamp": iso(acct.opening_time), "openingQty": 0, "openingCost": 0, "openingComm": 0,
        "openOrderBuyQty": buy_open, "openOrderBuyCost": -int(round(buy_cost)), "openOrderBuyPremium": 0,
        "openOrderSellQty": sell_open, "openOrderSellCost": int(round(sell_cost)), "openOrderSellPremium": 0,
        "grossOpenCost": m.open_value, "grossOpenPremium": 0, "grossExecCost": abs(cost),
        "execBuyQty": acct.exec_buy_qty, "execBuyCost": acct.exec_buy_cost,
        "execSellQty": acct.exec_sell_qty, "execSellCost": acct.exec_sell_cost,
        "execQty": acct.exec_buy_qty - acct.exec_sell_qty,
        "execCost": acct.exec_buy_cost + acct.exec_sell_cost, "execComm": acct.exec_comm,
        "currentTimestamp": ts, "currentQty": q, "currentCost": cost, "currentComm": acct.comm,
        "realisedCost": 0, "unrealisedCost": cost, "isOpen": q != 0,
        "markPrice": m.mark if q else mark_price, "markValue": m.mark_value,
        "riskValue": abs(m.mark_value), "homeNotional": q / m.mark if q else 0.0,
        "foreignNotional": float(-q), "posState": "", "posCost": cost, "posCost2": cost, "posCross": 0,
        "posLoss": 0, "posInit": m.pos_init, "posComm": m.pos_comm, "posMargin": m.pos_margin,
        "posMaint": m.pos_maint, "initMargin": m.order_margin,
        "maintMargin": m.pos_margin + (m.upnl if not acct.cross else 0),
        "realisedGrossPnl": acct.realised_gross, "realisedPnl": acct.realised_pnl,
        "unrealisedGrossPnl": m.upnl, "unrealisedPnl": m.upnl,
        "unrealisedPnlPcnt": round(m.upnl / abs(cost), 4) if cost else 0.0,
        "unrealisedRoePcnt": round(m.upnl / m.pos_init, 4) if m.pos_init else 0.0,
        "avgCostPrice": entry, "avgEntryPrice": entry, "breakEvenPrice": break_even,
        "marginCallPrice": m.liq if q else None, "liquidationPrice": m.liq if q else None,
        "bankruptPrice": m.bankrupt if q else None, "timestamp": ts,
        "lastPrice": last_price, "lastValue": m.mark_value,
    }


def margin_row(acct, m: Margins, risk_limit: int, ts: str) -> dict:
    """The margin table's row (user/margin) of an account with margins `m`."""
    balance = acct.wallet + m.upnl
    used = m.order_margin + m.pos_margin
    return {
        "account": acct.number, "currency": "XBt", "riskLimit": risk_limit, "amount": acct.wallet,
        "prevRealisedPnl": 0, "grossComm": acct.exec_comm, "grossOpenCost": m.open_value, "grossOpenPremium": 0,
        "grossExecCost": abs(acct.cost), "grossMarkValue": abs(m.mark_value),
        "riskValue": abs(m.mark_value), "initMargin": m.order_margin, "maintMargin": m.pos_margin,
        "targetExcessMargin": 0, "realisedPnl": acct.realised_pnl, "unrealisedPnl": m.upnl,
        "walletBalance": acct.wallet, "marginBalance": balance,
        "marginLeverage": round(abs(m.mark_value) / balance, 4) if balance > 0 else 0.0,
        "marginUsedPcnt": round(used / balance, 4) if balance > 0 else 1.0,
        "excessMargin": m.available, "availableMargin": m.available,
        "withdrawableMargin": max(0, min(m.available, acct.wallet)),
        "makerFeeDiscount": 0, "takerFeeDiscount": 0, "timestamp": ts,
        "foreignMarginBalance": balance, "foreignRequirement": m.pos_maint,
    }


def wallet_row(acct, ts: str) -> dict:
    return {
        "account": acct.number, "currency": "XBt", "prevDeposited": 0, "prevWithdrawn": 0,
        "prevTransferIn": 0, "prevTransferOut": 0, "prevAmount": acct.deposited, "deltaDeposited": 0,
        "deltaWithdrawn": 0, "deltaTransferIn": 0, "deltaTransferOut": 0,
        "deltaAmount": acct.wallet - acct.deposited, "deposited": acct.deposited, "withdrawn": 0,
        "transferIn": 0, "transferOut": 0, "amount": acct.wallet, "pendingCredit": 0, "pendingDebit": 0,
        "confirmedDebit": 0, "prevTimestamp": iso(acct.created), "timestamp": ts, "addr": "", "script": "",
        "withdrawalLock": [],
    }
