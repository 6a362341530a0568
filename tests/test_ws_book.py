"""The L2 book: replay of the shipped orderBookL2 streams against a plain
reference book, BitMEX row semantics, inconsistency detection, and
hypothesis property/fuzz tests through State.apply_message."""

from __future__ import annotations

import gzip
import json

import orjson
import pytest
from conftest import SHARED_DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sniper.ws.book import BookError, L2Book, ReferenceBook
from sniper.ws.state import State

DATA = SHARED_DATA
STREAMS = DATA / "streams"


def row(id, side, size=None, price=None, symbol="XBTUSD"):
    r = {"symbol": symbol, "id": id, "side": side}
    if size is not None:
        r["size"] = size
    if price is not None:
        r["price"] = price
    return r


def frame(action, rows, table="orderBookL2"):
    msg = {"table": table, "action": action, "data": rows}
    if action == "partial":
        msg["keys"] = ["symbol", "id", "side"]
    return json.dumps(msg)


def small_book():
    book = L2Book("XBTUSD")
    book.apply("partial", [row(1, "Sell", 5, 101.0), row(2, "Sell", 7, 100.5), row(3, "Buy", 4, 100.0),
                           row(4, "Buy", 9, 99.0), row(5, "Buy", 1, 98.5)])
    return book


# ---- replay of the shipped streams ---------------------------------------------

@pytest.mark.parametrize("name", ["l2_modern", "l2_legacy"])
def test_stream_replay_matches_reference_after_every_message(name):
    """Every frame of both formats, top 25 both sides compared after each
    message; then the full final book against the shipped final.json."""
    path = STREAMS / f"{name}.ndjson.gz"
    if not path.exists():
        pytest.skip(f"shared stream {path} is missing")
    state, ref = State(), ReferenceBook()
    with gzip.open(path, "rb") as f:
        for n, line in enumerate(f):
            state.apply_message(line)
            msg = json.loads(line)  # the reference parses independently, with the stdlib
            ref.apply(msg["action"], msg["data"])
            snap = state.snapshot(25)
            if snap.bids != ref.bids(25) or snap.asks != ref.asks(25):
                pytest.fail(f"{name} frame {n}: book differs from the reference\n"
                            f"bids {snap.bids[:5]} vs {ref.bids(5)}\nasks {snap.asks[:5]} vs {ref.asks(5)}")
    assert n > 1000
    assert not state.errors and state.book.valid and state.book.error is None
    state.book.check()
    final = json.loads((STREAMS / f"{name}.final.json").read_text())["book"]
    assert state.book.bids(None) == sorted(map(tuple, final["Buy"]), reverse=True)
    assert state.book.asks(None) == sorted(map(tuple, final["Sell"]))
    assert len(state.book) == len(final["Buy"]) + len(final["Sell"])


# ---- BitMEX semantics -------------------------------------------------------------

def test_partial_insert_update_delete_semantics():
    book = small_book()
    assert book.bids(2) == [(100.0, 4), (99.0, 9)]
    assert book.asks(5) == [(100.5, 7), (101.0, 5)]
    assert (book.best_bid, book.best_ask, len(book)) == (100.0, 100.5, 5)
    book.apply("insert", [row(6, "Buy", 3, 100.25)])
    assert book.best_bid == 100.25
    book.apply("update", [row(6, "Buy", 8)])  # legacy update: no price, keeps it
    assert book.bids(1) == [(100.25, 8)] and book.level_of(6, "Buy") == (100.25, 8)
    book.apply("update", [row(4, "Buy", price=97.0)])  # no size: keeps the size, moves the level
    assert book.bids(None)[-2:] == [(98.5, 1), (97.0, 9)]
    book.apply("delete", [row(6, "Buy"), row(2, "Sell")])
    assert (book.best_bid, book.best_ask, len(book)) == (100.0, 101.0, 4)
    book.apply("partial", [row(9, "Buy", 1, 50.0)])  # a partial replaces everything
    assert book.bids(None) == [(50.0, 1)] and book.asks() == [] and book.best_ask is None
    book.check()


def test_depth_arguments_and_size_within():
    book = small_book()
    assert book.bids(0) == [] and book.bids(-3) == [] and len(book.bids(None)) == 3
    assert book.size_within("Buy", 0.0) == 4
    assert book.size_within("Buy", 1.0) == 13
    assert book.size_within("Buy", 10.0) == 14
    assert book.size_within("Sell", 0.5) == 12
    with pytest.raises(ValueError):
        book.size_within("Both", 1.0)


def test_rows_for_other_symbols_are_skipped():
    book = small_book()
    book.apply("insert", [row(7, "Buy", 1, 99.5, symbol="ETHUSD")])
    book.apply("delete", [row(1, "Sell", symbol="ETHUSD")])
    assert len(book) == 5 and book.level_of(7, "Buy") is None


def test_same_id_on_both_sides_is_two_levels():
    """Keys are (symbol, id, side): an id may leave one side and join the other."""
    book = small_book()
    book.apply("delete", [row(2, "Sell")])
    book.apply("insert", [row(2, "Buy", 3, 100.5)])
    assert book.best_bid == 100.5 and book.level_of(2, "Sell") is None


@pytest.mark.parametrize("action,rows,why", [
    ("update", [row(99, "Buy", 1)], "update of unknown id"),
    ("delete", [row(99, "Sell")], "delete of unknown id"),
    ("delete", [row(3, "Sell")], "delete of unknown id"),
    ("insert", [row(3, "Buy", 1, 90.0)], "insert of an existing id"),
    ("insert", [row(8, "Buy", 1, 99.0)], "two levels at one price"),
    ("insert", [row(8, "Buy", 1, 100.5)], "crossed"),
    ("insert", [row(8, "Sell", 1, 99.0)], "crossed"),
    ("update", [row(3, "Buy", price=101.0)], "crossed"),
    ("update", [row(3, "Buy", price=99.0)], "two levels at one price"),
    ("insert", [row(8, "Buy", 1)], "insert without size or price"),
    ("insert", [{"symbol": "XBTUSD", "side": "Buy", "size": 1, "price": 1.0}], "integer id"),
    ("insert", [{"id": 8, "side": "Buy", "size": 1, "price": 1.0}], "without symbol"),
    ("insert", [{"symbol": "XBTUSD", "id": 8, "size": 1, "price": 1.0}], "without side"),
    ("insert", [row(8, "Bid", 1, 1.0)], "bad side"),
    ("insert", [row(8, "Buy", 0, 1.0)], "positive integer"),
    ("insert", [row(8, "Buy", 1.5, 1.0)], "size is not an integer"),
    ("insert", [row(8, "Buy", 1, "1.0")], "price is not a number"),
    ("insert", [row(8, "Buy", 1, float("nan"))], "not finite"),
    ("insert", [row(2**70, "Buy", 1, 1.0)], "id out of range"),
    ("insert", ["not a row"], "row is not an object"),
    ("update", [row(3, "Buy", -5)], "positive integer"),
])
def test_inconsistent_rows_invalidate_the_book(action, rows, why):
    book = small_book()
    with pytest.raises(BookError, match=why):
        book.apply(action, rows)
    assert not book.valid and why in book.error
    assert book.bids() == [] and book.best_bid is None and len(book) == 0
    with pytest.raises(BookError, match="no partial"):
        book.apply("update", [row(3, "Buy", 1)])
    book.apply("partial", [row(1, "Buy", 1, 1.0)])  # only a partial repairs it
    assert book.valid and book.error is None and book.bids() == [(1.0, 1)]


def test_partial_with_duplicate_or_crossed_levels_is_refused():
    for rows in ([row(1, "Buy", 1, 10.0), row(2, "Buy", 1, 10.0)],
                 [row(1, "Buy", 1, 10.0), row(1, "Buy", 2, 9.0)],
                 [row(1, "Buy", 1, 10.0), row(2, "Sell", 1, 10.0)]):
        book = L2Book("XBTUSD")
        with pytest.raises(BookError):
            book.apply("partial", rows)
        assert not book.valid


def test_unknown_action_is_a_value_error():
    with pytest.raises(ValueError):
        small_book().apply("upsert", [])


def test_grows_and_shrinks_through_many_levels():
    """Past every initial capacity (pool, hash, sides) and back, with the
    hash's backward-shift deletion exercised by interleaved ids."""
    book, ref = L2Book("XBTUSD"), ReferenceBook()
    for b in (book, ref):
        b.apply("partial", [])
    ins = [row(i, "Buy" if i % 2 else "Sell", i, 5000.0 - i if i % 2 else 5001.0 + i) for i in range(1, 3001)]
    for b in (book, ref):
        b.apply("insert", ins)
    book.check()
    dels = [row(i, "Buy" if i % 2 else "Sell") for i in range(1, 3001) if i % 3]
    for b in (book, ref):
        b.apply("delete", dels)
    book.check()
    assert book.bids(None) == ref.bids(None) and book.asks(None) == ref.asks(None)
    assert len(book) == 1000


def test_memory_per_level():
    book = L2Book("XBTUSD")
    book.apply("partial", [row(i, "Buy", 1, 10000.0 - i * 0.5) for i in range(10_000)])
    assert book.nbytes <= 1_500_000  # the ceiling per 10,000 levels


# ---- property tests ------------------------------------------------------------

BID_PRICES = [900 + i * 0.5 for i in range(200)]    # below every ask: never crossed
ASK_PRICES = [1000 + i * 0.5 for i in range(200)]


@st.composite
def book_messages(draw):
    """A valid partial and a valid random sequence of insert/update/delete
    messages (modern or legacy shape) with the model book after each."""
    model: dict[tuple[int, str], list] = {}
    next_id = [1]

    def free_price(side):
        used = {p for (_, s), (p, _) in model.items() if s == side}
        return draw(st.sampled_from([p for p in (BID_PRICES if side == "Buy" else ASK_PRICES) if p not in used]))

    def new_row(side):
        r = row(next_id[0], side, draw(st.integers(1, 10**6)), free_price(side))
        next_id[0] += 1
        model[(r["id"], side)] = [r["price"], r["size"]]
        return r

    legacy = draw(st.booleans())
    messages = [("partial", [new_row(draw(st.sampled_from(["Buy", "Sell"]))) for _ in range(draw(st.integers(0, 30)))])]
    for _ in range(draw(st.integers(1, 40))):
        action = draw(st.sampled_from(["insert", "update", "delete"] if model else ["insert"]))
        rows = []
        for _ in range(draw(st.integers(1, 5))):
            if action == "insert":
                rows.append(new_row(draw(st.sampled_from(["Buy", "Sell"]))))
                continue
            if not model:
                break
            key = draw(st.sampled_from(sorted(model)))
            price, size = model[key]
            if action == "delete":
                del model[key]
                rows.append(row(key[0], key[1], price=None if legacy else price))
            else:
                if draw(st.booleans()) and not legacy:
                    price = model[key][0] = free_price(key[1])  # a moved level
                size = model[key][1] = draw(st.integers(1, 10**6))
                rows.append(row(key[0], key[1], size, None if legacy else price))
        if rows:
            snapshot = {k: tuple(v) for k, v in model.items()}
            messages.append((action, rows, snapshot))
    return messages


def model_sides(model):
    bids = sorted(((p, s) for (_, side), (p, s) in model.items() if side == "Buy"), reverse=True)
    asks = sorted((p, s) for (_, side), (p, s) in model.items() if side == "Sell")
    return bids, asks


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book_messages())
def test_random_valid_sequences_match_the_model(messages):
    state = State()
    state.apply_message(frame("partial", messages[0][1]))
    for action, rows, model in messages[1:]:
        state.apply_message(frame(action, rows))
        assert state.book.valid, state.book.error
        state.book.check()
        bids, asks = model_sides(model)
        snap = state.snapshot(None)
        assert (snap.bids, snap.asks) == (bids, asks)
        assert snap.best_bid == (bids[0][0] if bids else None)
    assert not state.errors


JUNK_FRAMES = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=60),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                 lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                 max_leaves=12).map(json.dumps),
    st.builds(lambda t, a, d: orjson.dumps({"table": t, "action": a, "data": d}),
              st.sampled_from(["orderBookL2", "bogus", "order", "trade", 7]),
              st.sampled_from(["insert", "update", "delete", "upsert", None]),
              st.sampled_from([None, {}, "x", 3])),
)
ROW_VALUES = st.none() | st.booleans() | st.integers(-2**65, 2**65) | st.floats() | st.text(max_size=6)
JUNK_BOOK_ROWS = st.lists(
    st.dictionaries(st.sampled_from(["symbol", "id", "side", "size", "price", "x"]), ROW_VALUES, max_size=6)
    | ROW_VALUES, min_size=1, max_size=3)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(book_messages(), st.lists(st.tuples(st.integers(0, 40), JUNK_FRAMES), max_size=8),
       st.lists(st.tuples(st.integers(0, 40), st.sampled_from(["insert", "update", "delete"]), JUNK_BOOK_ROWS),
                max_size=4))
def test_fuzzed_input_never_escapes_nor_corrupts(messages, junk, junk_rows):
    """Junk frames leave the book exactly as the model; junk orderBookL2 rows
    either apply validly or invalidate the book, which a new partial repairs.
    Nothing raises and the invariants hold throughout."""
    state = State()
    state.apply_message(frame("partial", messages[0][1]))
    model = {(r["id"], r["side"]): (r["price"], r["size"]) for r in messages[0][1]}
    junk_at = {}
    for at, raw in junk:
        junk_at.setdefault(at, []).append(raw)
    rows_at = {at: (action, rows) for at, action, rows in junk_rows}
    for i, (action, rows, next_model) in enumerate(messages[1:]):
        for raw in junk_at.get(i, ()):
            state.apply_message(raw)
            snap = state.snapshot(None)
            assert (snap.bids, snap.asks) == model_sides(model)
        if i in rows_at:
            state.apply_message(json.dumps({"table": "orderBookL2", "action": rows_at[i][0], "data": rows_at[i][1]}))
            state.book.check()
            snap = state.snapshot(None)
            assert all(a[0] > b[0] for a, b in zip(snap.bids, snap.bids[1:], strict=False))
            assert all(a[0] < b[0] for a, b in zip(snap.asks, snap.asks[1:], strict=False))
            assert not (snap.bids and snap.asks) or snap.bids[0][0] < snap.asks[0][0]
            # resync, as the client would: a fresh partial of the true book
            state.apply_message(frame("partial", [row(k[0], k[1], s, p) for k, (p, s) in model.items()]))
        model = next_model
        state.apply_message(frame(action, rows))
        assert state.book.valid, state.book.error
        state.book.check()
        assert (state.book.bids(None), state.book.asks(None)) == model_sides(model)


def test_huge_depths_and_huge_rows_are_harmless():
    book = small_book()
    assert book.bids(10**12) == book.bids(None) and book.asks(2**40) == book.asks(None)
    with pytest.raises(BookError) as err:
        book.apply("insert", [row(9, "Buy", 1, 1.0) | {"junk": "x" * 100_000, "size": -1}])
    assert len(str(err.value)) < 300  # the error (and the log line) quote a bounded prefix
