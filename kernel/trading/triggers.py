"""The trigger index: SL/TP of open positions and pending orders, checked on every tick.

Per symbol and instrument terms (the group's quote adjusters make each group see its
own bid/ask), four heaps hold the trigger prices, so a tick costs O(1) when nothing
triggers and O(log n) per trigger that fires:

===============  ===========================  ======================================
heap             fires when                   holds
===============  ===========================  ======================================
bid rising       bid >= price                 long TP, sell limit (3)
bid falling      bid <= price                 long SL, sell stop (5), sell stop-limit (7)
ask rising       ask >= price                 short SL, buy stop (4), buy stop-limit (6)
ask falling      ask <= price                 short TP, buy limit (2)
===============  ===========================  ======================================

(DOMAIN.md: buy limit ask <= price, buy stop ask >= price, sell limit bid >= price,
sell stop bid <= price; a long position's SL/TP on the bid, a short's on the ask.)

A fired entry leaves the index and becomes a job on the account's shard worker, which
re-checks it under the account's lock and the account's current state; a job that
finds it no longer due re-arms it. Pending orders with an expiry sit in a time heap
checked against the market clock; a pending order moves to its group's new terms
when they change (the account's money-changed notice follows every group or
configuration change). Removal is lazy (stale heap entries are skipped
and heaps are compacted when mostly stale). Every process receives every tick, so an
order placed through any process is watched by the process that wrote it.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import count

from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.descriptors import SymbolTerms
from brokerkernel.kernel.pricing import Quote
from brokerkernel.kernel.trading.jobs import Job
from brokerkernel.kernel.trading.state import AccountState, OpenPosition, PendingState
from brokerkernel.kernel.trading.terms import TermsCache
from brokerkernel.kernel.trading.valuation import Valuation

BID_UP, BID_DOWN, ASK_UP, ASK_DOWN = range(4)
#: pending cmd -> heap
PENDING_HEAP = {2: ASK_DOWN, 3: BID_UP, 4: ASK_UP, 5: BID_DOWN, 6: ASK_UP, 7: BID_DOWN}

# ("position", ticket, "sl"|"tp") or ("pending", order id, "")
Key = tuple[str, int, str]
JobFactory = Callable[[int, Key, Quote], Job]


@dataclass(slots=True)
class _Bucket:
    """The four heaps of one (symbol, terms); a falling heap stores negated prices."""

    terms: SymbolTerms
    heaps: list[list[tuple[Decimal, int, Key, int]]] = field(
        default_factory=lambda: [[], [], [], []]
    )
    #: live (not yet removed) entries per heap, for compaction without a scan
    live: list[int] = field(default_factory=lambda: [0, 0, 0, 0])


@dataclass(frozen=True, slots=True)
class _Entry:
    bucket: _Bucket
    heap: int
    price: Decimal
    seq: int
    login: int


class TriggerIndex:
    """Watches trigger prices and hands fired ones to ``submit`` as jobs built by
    ``make_job(login, key, raw quote)``; ``expire(login, order_id)`` builds the job of
    an expired pending order."""

    def __init__(
        self,
        valuation: Valuation,
        terms: TermsCache,
        clock: MarketClock,
        submit: Callable[[Job], None],
        make_job: JobFactory,
        expire: Callable[[int, int], Job],
    ) -> None:
        self._valuation = valuation
        self._terms = terms
        self._clock = clock
        self._submit = submit
        self._make_job = make_job
        self._expire = expire
        self._buckets: dict[str, dict[SymbolTerms, _Bucket]] = {}
        self._live: dict[Key, _Entry] = {}
        self._by_login: dict[int, set[Key]] = {}
        self._expiries: list[tuple[int, int, int, int]] = []  # (ms, order id, login, seq)
        self._expiry_seq: dict[int, int] = {}
        self._seq = count()

    # --- keeping the index (StateWatcher) ------------------------------------------

    def account_loaded(self, account: AccountState) -> None:
        for key in list(self._by_login.get(account.login, ())):
            self._remove(key)
        for position in account.positions.values():
            self.position_changed(account, position)
        for order in account.pending.values():
            self.pending_changed(account, order)

    def position_changed(self, account: AccountState, position: OpenPosition) -> None:
        for kind in ("sl", "tp"):
            key: Key = ("position", position.ticket, kind)
            self._remove(key)
            price = position.sl if kind == "sl" else position.tp
            if price is None:
                continue
            long = position.side > 0
            heap = (
                (BID_DOWN if long else ASK_UP) if kind == "sl" else (BID_UP if long else ASK_DOWN)
            )
            self._add(key, account.login, position.terms, heap, price)

    def position_removed(self, account: AccountState, position: OpenPosition) -> None:
        self._remove(("position", position.ticket, "sl"))
        self._remove(("position", position.ticket, "tp"))

    def pending_changed(self, account: AccountState, order: PendingState) -> None:
        key: Key = ("pending", order.id, "")
        self._remove(key)
        self._expiry_seq.pop(order.id, None)
        if order.status != "active":
            return
        if order.expiry_at is not None:  # expires whether or not its terms are known
            seq = next(self._seq)
            self._expiry_seq[order.id] = seq
            expiry_ms = int(order.expiry_at.timestamp() * 1000)
            heapq.heappush(self._expiries, (expiry_ms, order.id, account.login, seq))
        terms = self._terms.terms(account.group_id, order.symbol)
        if terms is not None:
            self._add(key, account.login, terms, PENDING_HEAP[order.cmd], order.trigger_price)

    def money_changed(self, account: AccountState) -> None:
        """Move the account's watched pending orders whose group terms changed (a
        group reassignment, a new override or spread) to the terms the group has now,
        so they trigger on the quote the group sees."""
        for order in account.pending.values():
            entry = self._live.get(("pending", order.id, ""))
            if entry is None:
                continue  # not watched: fired (its job re-arms it) or not tradable
            terms = self._terms.terms(account.group_id, order.symbol)
            if terms is not entry.bucket.terms and terms != entry.bucket.terms:
                self.pending_changed(account, order)

    def _add(self, key: Key, login: int, terms: SymbolTerms, heap: int, price: Decimal) -> None:
        buckets = self._buckets.setdefault(terms.symbol, {})
        bucket = buckets.get(terms)
        if bucket is None:
            bucket = buckets[terms] = _Bucket(terms)
        seq = next(self._seq)
        self._live[key] = _Entry(bucket, heap, price, seq, login)
        self._by_login.setdefault(login, set()).add(key)
        falling = heap in (BID_DOWN, ASK_DOWN)
        entries = bucket.heaps[heap]
        heapq.heappush(entries, (-price if falling else price, seq, key, login))
        bucket.live[heap] += 1
        if len(entries) > 64 and len(entries) > 3 * bucket.live[heap]:
            bucket.heaps[heap] = [e for e in entries if self._is_live(e)]
            heapq.heapify(bucket.heaps[heap])

    def _is_live(self, item: tuple[Decimal, int, Key, int]) -> bool:
        entry = self._live.get(item[2])
        return entry is not None and entry.seq == item[1]

    def _remove(self, key: Key) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            entry.bucket.live[entry.heap] -= 1
            keys = self._by_login.get(entry.login)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_login[entry.login]

    # --- ticks ------------------------------------------------------------------------

    def on_tick(self, quote: Quote) -> None:
        """Fire every entry of ``quote.symbol`` the (group-adjusted) quote reaches, and
        every pending order whose expiry the market clock has passed."""
        for bucket in list(self._buckets.get(quote.symbol, {}).values()):
            if not any(bucket.live):
                continue  # nothing watched here: skip the group price adjustment
            seen = self._valuation.adjust(quote, bucket.terms)
            for heap, price, falling in (
                (BID_UP, seen.bid, False),
                (BID_DOWN, seen.bid, True),
                (ASK_UP, seen.ask, False),
                (ASK_DOWN, seen.ask, True),
            ):
                entries = bucket.heaps[heap]
                # rising: fire while price >= threshold; falling (negated): price <= threshold
                bound = -price if falling else price
                while entries and entries[0][0] <= bound:
                    _, seq, key, login = heapq.heappop(entries)
                    entry = self._live.get(key)
                    if entry is None or entry.seq != seq:
                        continue
                    self._remove(key)
                    self._submit(self._make_job(login, key, quote))
        self.expire_due()

    def expire_due(self) -> None:
        """Hand the pending orders whose ``expiry_at`` has passed to their workers."""
        now_ms = self._clock.now_ms()
        while self._expiries and self._expiries[0][0] <= now_ms:
            _, order_id, login, seq = heapq.heappop(self._expiries)
            if self._expiry_seq.get(order_id) != seq:
                continue
            del self._expiry_seq[order_id]
            self._remove(("pending", order_id, ""))
            self._submit(self._expire(login, order_id))
