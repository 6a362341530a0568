"""Inverse-contract arithmetic (sim/margin.py) against numbers worked out by hand.

1 contract = 1 USD; value = |qty| / price * 1e8 XBt, rounded; a buy costs -value, a sell
+value; a long's PnL is qty * (1/entry - 1/exit) * 1e8 (model.inverse_pnl, in XBT).
"""

from __future__ import annotations

import pytest

from sniper.model import BUY, SATOSHI, SELL, bankruptcy_price, inverse_pnl
from sniper.sim.feed import load_instrument
from sniper.sim.margin import (
    Contract,
    PositionChange,
    avg_entry_price,
    commission,
    contract_value,
    exec_cost,
    funding_payment,
    initial_margin_req,
    liquidation_price,
    margins,
    mark_value,
    open_exposure,
    position_after_fill,
    price_at_loss,
    unrealised_pnl,
)

XBTUSD = Contract.of(load_instrument())


def test_contract_terms_of_the_bundled_instrument():
    assert XBTUSD == Contract(symbol="XBTUSD", tick_size=0.5, lot_size=1, max_price=1_000_000,
                              max_order_qty=10_000_000, init_margin=0.01, maint_margin=0.005,
                              risk_limit=20_000_000_000, maker_fee=-0.00025, taker_fee=0.00075)


def test_value_cost_and_commission():
    # 100 / 10000 * 1e8 = 1,000,000; 200 / 10000.5 * 1e8 = 1,999,900.005 -> 1,999,900
    assert contract_value(100, 10000) == 1_000_000
    assert contract_value(-200, 10000.5) == 1_999_900
    assert exec_cost(200, 10000.5) == -1_999_900  # a buy pays
    assert exec_cost(-200, 10000.5) == 1_999_900  # a sell receives
    # taker 0.075 % of 1,999,900 = 1,499.925 -> 1,500; maker -0.025 % of 1,000,000 = -250 (a rebate)
    assert commission(1_999_900, 0.00075) == 1_500
    assert commission(1_000_000, -0.00025) == -250


def test_average_entry_is_the_harmonic_mean():
    # long 100 @ 10000 and 100 @ 12000: cost 1,000,000 + 833,333 = 1,833,333 -> 200e8 / 1,833,333
    assert avg_entry_price(200, -1_833_333) == pytest.approx(10909.0929, abs=1e-4)
    assert avg_entry_price(200, -1_833_333) == pytest.approx(2 / (1 / 10000 + 1 / 12000), abs=0.01)
    assert avg_entry_price(0, 0) is None


def test_position_after_fills_open_add_reduce_close_and_flip():
    assert position_after_fill(0, 0, 100, -1_000_000) == PositionChange(100, -1_000_000, 0, True)
    assert position_after_fill(100, -1_000_000, 100, -833_333) == PositionChange(200, -1_833_333, 0, False)
    # reduce a long 200 (cost -2,000,000) by selling 50 @ 11000: +454,545 (454,545.45).
    # closed part's cost -2,000,000 * 50/200 = -500,000; realised -(-500,000 + 454,545) = 45,455
    assert position_after_fill(200, -2_000_000, -50, 454_545) == PositionChange(150, -1_500_000, 45_455, False)
    # close long 100 @ 10000 at 11000: -(-1,000,000 + 909,091) = 90,909 = 100 * (1/10000 - 1/11000) * 1e8
    closed = position_after_fill(100, -1_000_000, -100, 909_091)
    assert closed == PositionChange(0, 0, 90_909, False)
    assert closed.realised == round(inverse_pnl(100, 10000, 11000) * SATOSHI)
    # short 100 @ 10000 bought back at 11000 loses: -(1,000,000 - 909,091) = -90,909
    assert position_after_fill(-100, 1_000_000, 100, -909_091).realised == -90_909
    # flip: long 100 (cost -1,000,000) sells 150 @ 11000 (+1,363,636): 100 close for
    # round(1,363,636 * 100/150) = 909,091 (realised 90,909); 50 open short at 1,363,636 - 909,091
    assert position_after_fill(100, -1_000_000, -150, 1_363_636) == PositionChange(-50, 454_545, 90_909, True)


def test_mark_value_and_unrealised_pnl():
    # long 200 costing -1,833,333 at mark 11000: markValue round(-200/11000*1e8) = -1,818,182
    assert mark_value(200, 11000) == -1_818_182
    assert unrealised_pnl(200, -1_833_333, 11000) == 15_151
    assert unrealised_pnl(200, -1_833_333, 11000) == pytest.approx(
        inverse_pnl(200, avg_entry_price(200, -1_833_333), 11000) * SATOSHI, abs=1)
    assert mark_value(0, 11000) == 0 and unrealised_pnl(0, 0, 11000) == 0


@pytest.mark.parametrize("qty,rate,paid", [
    (1000, 0.0001, 2_000),  # positive rate: the long pays ...
    (-1000, 0.0001, -2_000),  # ... and the short receives
    (1000, -0.000223, -4_460),  # negative rate: the long receives ...
    (-1000, -0.000223, 4_460),  # ... and the short pays
    (0, 0.0001, 0),
])
def test_funding_payment_sign_longs_pay_when_the_rate_is_positive(qty, rate, paid):
    # value at mark 5000: 1000 / 5000 * 1e8 = 20,000,000 XBt; payment = value * rate
    assert funding_payment(qty, 5000, rate) == paid


def test_initial_margin_requirement():
    assert initial_margin_req(True, 10, 0.01) == 0.01  # cross: the instrument's
    assert initial_margin_req(False, 10, 0.01) == 0.1  # isolated 10x
    assert initial_margin_req(False, 200, 0.01) == 0.01  # never below the instrument's


def test_open_exposure_counts_the_larger_growing_side():
    # buys 100 @ 10000 = 1,000,000; sells 300 @ 12000 = 2,500,000: only the larger side counts
    orders = [(BUY, 100, 10000.0, False), (SELL, 300, 12000.0, False)]
    assert open_exposure(orders, 0) == pytest.approx(2_500_000)
    # long 200: the first 200 sold only close it, so 100 of the 300 grow a short (2,500,000 / 3)
    # and the buys, all growing the long (1,000,000), are now the larger side
    assert open_exposure(orders[1:], 200) == pytest.approx(2_500_000 / 3)
    assert open_exposure(orders, 200) == pytest.approx(1_000_000)
    assert open_exposure([(SELL, 300, 12000.0, True), (BUY, 5, None, False)], 0) == 0.0  # reduce-only, no price


def test_price_at_loss_is_the_bankruptcy_price_of_the_model():
    # long 1000 @ 5000 (cost -20,000,000) at 10x loses its 2,000,000 margin at 5000 * 10/11
    assert price_at_loss(1000, -20_000_000, 2_000_000, 1e6) == pytest.approx(bankruptcy_price(5000, 10, True))
    assert price_at_loss(-1000, 20_000_000, 2_000_000, 1e6) == pytest.approx(bankruptcy_price(5000, 10, False))
    assert price_at_loss(-1000, 20_000_000, 20_000_000, 1e6) == 1e6  # a 1x short: capped at maxPrice
    # break-even of a long that paid 15,000 in fees: 1/P = 1/5000 - 15,000 / 1e11
    assert price_at_loss(1000, -20_000_000, -15_000, 1e6) == pytest.approx(1 / (2e-4 - 1.5e-7))


def test_liquidation_price_rounds_towards_the_entry():
    # 1/P = 1/5000 + 1,900,000 / 1e11 = 0.000219 -> 4566.21 -> a long's rounds up to 4566.5
    assert liquidation_price(1000, -20_000_000, 1_900_000, 0.5, 1e6) == 4566.5
    # short: 1/P = 0.0002 - 0.000019 = 0.000181 -> 5524.86 -> rounds down to 5524.5
    assert liquidation_price(-1000, 20_000_000, 1_900_000, 0.5, 1e6) == 5524.5
    assert liquidation_price(0, 0, 1_900_000, 0.5, 1e6) == 0.0


def test_margins_cross_and_isolated():
    # long 1000 @ 5000 (cost -20,000,000), wallet 1 XBT, cross (imr 1 %), mark 4000
    m = margins(1000, -20_000_000, 100_000_000, 4000.0, 0.0, cross=True, imr=0.01, contract=XBTUSD)
    # markValue -1000/4000*1e8 = -25,000,000, upnl -5,000,000; posInit 1 % of 20,000,000 = 200,000,
    # posComm 0.075 % = 15,000, posMaint 0.5 % + posComm = 115,000
    assert (m.mark, m.mark_value, m.upnl) == (4000.0, -25_000_000, -5_000_000)
    assert (m.pos_init, m.pos_comm, m.pos_margin, m.pos_maint) == (200_000, 15_000, 215_000, 115_000)
    assert (m.order_margin, m.open_value) == (0, 0)
    assert m.available == 100_000_000 - 215_000 - 5_000_000  # cross counts the unrealised loss
    # cross: the whole wallet covers the position. Bankrupt at 1/P = 1/5000 + 1e8/1e11 = 0.0012;
    # liquidated at 1/P = 0.0002 + 99,885,000/1e11 = 0.00119885 (834.13 -> 834.5)
    assert m.bankrupt == pytest.approx(1 / 0.0012) and m.liq == 834.5
    # isolated 10x at mark 5000: posInit 2,000,000 + posComm 15,000 is all it may lose
    m = margins(1000, -20_000_000, 100_000_000, 5000.0, 0.0, cross=False, imr=0.1, contract=XBTUSD)
    assert (m.pos_margin, m.upnl, m.available) == (2_015_000, 0, 100_000_000 - 2_015_000)
    assert m.bankrupt == pytest.approx(1 / (0.0002 + 2_015_000 / 1e11))  # 4542.36
    assert m.liq == 4566.5  # 1/P = 0.0002 + (2,015,000 - 115,000) / 1e11
    # open orders worth 3,000,000 at 10x hold 300,000; with no market price the entry is the mark
    m = margins(1000, -20_000_000, 100_000_000, None, 3_000_000.0, cross=False, imr=0.1, contract=XBTUSD)
    assert (m.mark, m.order_margin, m.open_value) == (5000.0, 300_000, 3_000_000)
    assert m.available == 100_000_000 - 300_000 - 2_015_000
    flat = margins(0, 0, 100_000_000, None, 0.0, cross=True, imr=0.01, contract=XBTUSD)
    assert (flat.pos_margin, flat.liq, flat.bankrupt, flat.available) == (0, 0.0, 0.0, 100_000_000)
