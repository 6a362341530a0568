"""The full-depth L2 order book (orderBookL2) for one symbol.

The implementation is C (`sniper/ws/_core.pyx`, see its docstring for the
layout): O(1) lookup by id, best bid/ask and the top N levels each side
without scanning, `size_within` a price distance, and `check()` for the
full invariants.

Cost per row: finding the level by id is O(1) and a size-only update is
O(1). A row that adds, removes or re-prices a level also shifts the sorted
array of its side between that level and the touch: O(k) for a level k
places from the best price (a galloping search plus one memmove of 16 k
bytes). Real streams change levels near the touch, where k is small; an
insert or delete at the far end of an 8,000-level side measured about
2.5 us here against 0.5 us near the touch. A tree would make that O(log n) at the price of slower
touch reads and more memory; the benchmark shows no need so far. A crossed book or an impossible row (unknown id,
duplicate id or price, missing key) raises `BookError` and leaves the book
invalid until the next partial: the caller resyncs, nothing is patched up.

    book = L2Book("XBTUSD")
    book.apply("partial", rows); book.apply("update", rows)
    book.bids(25) -> [(price, size), ...] best first; book.best_ask; len(book)
"""

from sniper.model import BUY, SELL
from sniper.ws._core import BookError, L2Book

__all__ = ["BookError", "L2Book"]


class ReferenceBook:
    """The straightforward book the fast one is checked and benchmarked
    against: a dict from (id, side) to price plus a sorted dict per side.
    Trusts its input (no validation); needs `sortedcontainers` (dev extra)."""

    def __init__(self) -> None:
        from sortedcontainers import SortedDict

        self._new_side = SortedDict
        self.prices: dict[tuple[int, str], float] = {}
        self.sides = {BUY: SortedDict(), SELL: SortedDict()}

    def apply(self, action: str, rows: list[dict]) -> None:
        if action == "partial":
            self.prices.clear()
            self.sides = {BUY: self._new_side(), SELL: self._new_side()}
        for row in rows:
            key = (row["id"], row["side"])
            side = self.sides[row["side"]]
            if action == "delete":
                del side[self.prices.pop(key)]
            elif action == "update":
                price = self.prices[key]
                size = row.get("size", side[price])
                if row.get("price", price) != price:
                    del side[price]
                    price = self.prices[key] = row["price"]
                side[price] = size
            else:
                self.prices[key] = row["price"]
                side[row["price"]] = row["size"]

    def bids(self, depth: int | None = 25) -> list[tuple[float, int]]:
        items = self.sides[BUY].items()
        start = 0 if depth is None else max(len(items) - depth, 0)
        return list(reversed(items[start:]))

    def asks(self, depth: int | None = 25) -> list[tuple[float, int]]:
        items = self.sides[SELL].items()
        return list(items[:depth])
