"""Batched ledger appends: group commit for postings at volume.

One ledger row per unit of work costs a commit (an fsync on PostgreSQL) per monetary
event. Postings from outside the trading core that arrive in bursts (bulk bonuses,
payment-callback storms) can go through :class:`LedgerBatcher` instead: concurrent
:meth:`~LedgerBatcher.post` calls are collected while a write is under way and the
next batch is written in one unit of work. The trading core's postings (order opens
and closes, commissions, swaps, stop-outs) do not use it: the order workers already
group-commit them (``kernel/trading/workers.py``), and as the writers of the
accounts they hold in memory they must stay their only writer on the hot path (a
posting from here bumps the account's version and makes the worker reload it).
The money service's provider updates use it
(:meth:`brokerkernel.kernel.money.payments.PaymentService.apply`): each update is a
:data:`Claim`, work of its own (the transaction row, its outbox event, the callback
log) done in the batch's unit of work, which returns the posting to write with it.

A batch's unit of work first runs its claims in arrival order (they lock their own
rows, e.g. the transaction row, as the single-transaction paths do: transaction row
before account; a claim must not lock an account, which would be held while later
claims wait for rows), then locks every account of the batch's postings in login order
(``SELECT ... FOR UPDATE``, so concurrent batchers and single writers in other
processes cannot interleave), appends each posting through
:func:`brokerkernel.kernel.trading.ledger.entry` (deltas, running totals, gap-free
``sequence_num``) with its audit-log row
(:func:`~brokerkernel.kernel.trading.ledger.entry_audit`, as every ledger writer),
inserts all rows in one bulk statement per table and commits once, claims' rows
included.

Postings are idempotent: one whose ``idempotency_key`` is already in the ledger (or
earlier in the same batch) writes nothing and reports ``duplicate``. Should a batch
fail (a concurrent writer elsewhere took a key between the check and the insert, a
claim raised, PostgreSQL aborted a deadlock on claims' rows), it is retried posting
by posting, so one failure never fails the others; a claim may therefore run more
than once, and only its last run's writes commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import Base, LedgerEvent, TradingAccount
from brokerkernel.kernel.trading import audit, ledger
from brokerkernel.kernel.trading.models import AuditLogEntry

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Posting:
    """One ledger event to write on account ``login``: deltas in the account currency,
    already rounded to its minor unit; ``event_type`` one of the seed's ledger types
    (section 7); ``at`` aware UTC; ``source`` the service named in its audit row."""

    login: int
    event_type: str
    reference_type: str
    reference_id: str
    idempotency_key: str
    description: str
    at: datetime
    balance_delta: Decimal = ZERO
    credit_delta: Decimal = ZERO
    margin_delta: Decimal = ZERO
    source: str = "money-service"

    def ledger_fields(self) -> dict[str, Any]:
        """The keyword arguments of :func:`ledger.entry` (and :func:`ledger.append`,
        with ``source``) for this posting, after the account and ``event_type``."""
        return {
            "reference_type": self.reference_type,
            "reference_id": self.reference_id,
            "idempotency_key": self.idempotency_key,
            "description": self.description,
            "at": self.at,
            "balance_delta": self.balance_delta,
            "credit_delta": self.credit_delta,
            "margin_delta": self.margin_delta,
        }


@dataclass(frozen=True, slots=True)
class Posted:
    """A posting's ledger row (``sequence_num``, ``balance_after``, ...); ``duplicate``
    when the key was already there and this posting wrote nothing."""

    row: dict[str, Any]
    duplicate: bool = False


#: A posting's own work in its batch's unit of work (:meth:`LedgerBatcher.claim`): given
#: the session, it locks and checks its rows, stages its changes and returns the
#: posting to write with them, or None when it moves no money. It must not change an
#: account (the batch locks and writes those). Claims run without autoflush (their
#: rows are flushed together once the accounts are locked), so a claim's queries do
#: not see rows that earlier claims of the batch staged; objects it loads again are
#: the session's, with their staged changes.
Claim = Callable[[AsyncSession], Awaitable[Posting | None]]

_TABLE = Base.metadata.tables[LedgerEvent.__tablename__]
_COLUMNS = tuple(c.key for c in _TABLE.columns)
_AUDIT = Base.metadata.tables[AuditLogEntry.__tablename__]


class LedgerBatcher:
    """Writes postings in batches of at most ``max_batch`` (see the module docstring).

    Postings are spread over ``shards`` writers by login (``login % shards``), so the
    accounts of concurrent batches never overlap and their units of work proceed in
    parallel on PostgreSQL; keep one shard on SQLite (a single writer anyway). Safe to
    share within a process; several processes may each run one.
    """

    def __init__(self, db: Database, max_batch: int = 1000, shards: int = 1) -> None:
        self._db = db
        self._max_batch = max_batch
        self._pending: list[list[tuple[Posting | Claim, asyncio.Future[Posted | None]]]] = [
            [] for _ in range(shards)
        ]
        self._writers: list[asyncio.Task[None] | None] = [None] * shards
        self.batches = 0

    async def post(self, posting: Posting) -> Posted:
        """Write ``posting`` with whatever else is pending; returns once committed.

        Raises LookupError when the account does not exist, or what the database
        raised for this posting.
        """
        return (await self.post_many([posting]))[0]

    async def post_many(self, postings: Sequence[Posting]) -> list[Posted]:
        """Post several at once (they share batches with concurrent callers); the
        results in order. Raises the first posting's error, as :meth:`post`."""
        results = await self._submit([(posting.login, posting) for posting in postings])
        return cast(list[Posted], results)  # a Posting's result is never None

    async def claim(self, claim: Claim) -> Posted | None:
        """Run ``claim`` in the next batch's unit of work (on shard 0) and write the
        posting it returns; returns once committed: the posting's row, or None when
        the claim returned None. ``claim`` may run more than once (see the module
        docstring), so it must keep no state but that of its last run.

        Raises what ``claim`` raised, LookupError when its posting's account does not
        exist (the claim's writes are then rolled back), or what the database raised.
        """
        (result,) = await self._submit([(0, claim)])
        return result

    async def _submit(self, items: Sequence[tuple[int, Posting | Claim]]) -> list[Posted | None]:
        """Queue ``(shard key, item)`` pairs, start the writers they need, await them."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Posted | None]] = []
        for key, item in items:
            future: asyncio.Future[Posted | None] = loop.create_future()
            shard = key % len(self._pending)
            self._pending[shard].append((item, future))
            futures.append(future)
            writer = self._writers[shard]
            if writer is None or writer.done():
                self._writers[shard] = asyncio.create_task(
                    self._drain(shard), name=f"ledger-batcher-{shard}"
                )
        return list(await asyncio.gather(*futures))

    async def _drain(self, shard: int) -> None:
        await asyncio.sleep(0)  # let the callers scheduled with this one join the batch
        pending = self._pending[shard]
        while pending:
            batch = pending[: self._max_batch]
            del pending[: self._max_batch]
            try:
                outcomes = await self._write([item for item, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    outcomes = [exc]
                else:
                    outcomes = [await self._write_alone(item) for item, _ in batch]
            self.batches += 1
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue  # the caller went away
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _write_alone(self, item: Posting | Claim) -> Posted | Exception | None:
        try:
            outcome = (await self._write([item]))[0]
        except Exception as exc:
            return exc
        return outcome

    @staticmethod
    async def _lock(
        session: AsyncSession, postings: Sequence[Posting]
    ) -> tuple[dict[str, dict[str, Any]], dict[int, TradingAccount]]:
        """The ledger rows already holding the postings' keys (by key) and the
        postings' accounts, locked in login order (by login)."""
        keys = [p.idempotency_key for p in postings]
        known = {
            row.idempotency_key: {c: getattr(row, c) for c in _COLUMNS}
            for row in (
                await session.scalars(
                    select(LedgerEvent).where(LedgerEvent.idempotency_key.in_(keys))
                )
            ).all()
        }
        logins = sorted({p.login for p in postings})
        accounts = {
            account.login: account
            for account in (
                await session.scalars(
                    select(TradingAccount)
                    .where(TradingAccount.login.in_(logins))
                    .order_by(TradingAccount.login)
                    .with_for_update()
                    # the rows as locked, not as a claim may have read them
                    .execution_options(populate_existing=True)
                )
            ).all()
        }
        return known, accounts

    async def _write(self, items: Sequence[Posting | Claim]) -> list[Posted | Exception | None]:
        outcomes: list[Posted | Exception] = []
        async with self._db.transaction() as session:
            # Nothing staged is flushed before the accounts are locked: the claims' rows
            # (outbox events among them) are written under the account locks, as the
            # other writers of those accounts write theirs.
            with session.no_autoflush:
                claimed = [
                    item if isinstance(item, Posting) else await item(session) for item in items
                ]
                # (posting, whether a claim returned it)
                postings = [
                    (posting, not isinstance(item, Posting))
                    for item, posting in zip(items, claimed, strict=True)
                    if posting is not None
                ]
                known, accounts = await self._lock(session, [p for p, _ in postings])
            rows = []
            audits = []
            for posting, of_claim in postings:
                earlier = known.get(posting.idempotency_key)
                account = accounts.get(posting.login)
                if earlier is not None:
                    outcomes.append(Posted(earlier, duplicate=True))
                elif account is None:
                    missing = LookupError(f"Account {posting.login} not found")
                    if of_claim:
                        raise missing  # rolls the claim's own writes back with it
                    outcomes.append(missing)
                else:
                    before = audit.snapshot(account)
                    row = ledger.entry(account, posting.event_type, **posting.ledger_fields())
                    known[posting.idempotency_key] = row
                    rows.append(row)
                    audits.append(ledger.entry_audit(account, before, row, posting.source))
                    outcomes.append(Posted(row))
            if rows:  # one multi-row INSERT per table (Core: no ORM bookkeeping per row)
                await session.execute(insert(_TABLE), rows)
                await session.execute(insert(_AUDIT), audits)
        results = iter(outcomes)
        return [None if posting is None else next(results) for posting in claimed]
