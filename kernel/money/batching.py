"""Batched ledger appends: group commit for postings at volume.

One ledger row per unit of work costs a commit (an fsync on PostgreSQL) per monetary
event. System postings that arrive in bursts (nightly swaps and commissions for every
open position, bulk bonuses, callback storms) go through :class:`LedgerBatcher`
instead: concurrent :meth:`~LedgerBatcher.post` calls are collected while a write is
under way and the next batch is written in one unit of work. That unit locks every
account of the batch in login order (``SELECT ... FOR UPDATE``, so concurrent
batchers and single writers in other processes cannot interleave or deadlock),
appends each posting through :func:`brokerkernel.kernel.trading.ledger.entry` (deltas,
running totals, gap-free ``sequence_num``) with its audit-log row
(:func:`~brokerkernel.kernel.trading.ledger.entry_audit`, as every ledger writer),
inserts all rows in one bulk statement per table and commits once.

Postings are idempotent: one whose ``idempotency_key`` is already in the ledger (or
earlier in the same batch) writes nothing and reports ``duplicate``. Should a batch
still hit a unique key (a concurrent writer elsewhere took it between the check and
the insert), it is retried posting by posting, so one collision never fails the
others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

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


@dataclass(frozen=True, slots=True)
class Posted:
    """A posting's ledger row (``sequence_num``, ``balance_after``, ...); ``duplicate``
    when the key was already there and this posting wrote nothing."""

    row: dict[str, Any]
    duplicate: bool = False


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
        self._pending: list[list[tuple[Posting, asyncio.Future[Posted]]]] = [
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
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Posted]] = []
        for posting in postings:
            future: asyncio.Future[Posted] = loop.create_future()
            shard = posting.login % len(self._pending)
            self._pending[shard].append((posting, future))
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
                outcomes = await self._write([posting for posting, _ in batch])
            except IntegrityError:
                outcomes = [await self._write_alone(posting) for posting, _ in batch]
            except Exception as exc:
                outcomes = [exc] * len(batch)
            self.batches += 1
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue  # the caller went away
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    async def _write_alone(self, posting: Posting) -> Posted | Exception:
        try:
            outcome = (await self._write([posting]))[0]
        except Exception as exc:
            return exc
        return outcome

    async def _write(self, postings: Sequence[Posting]) -> list[Posted | Exception]:
        keys = [p.idempotency_key for p in postings]
        outcomes: list[Posted | Exception] = []
        async with self._db.transaction() as session:
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
                    )
                ).all()
            }
            rows = []
            audits = []
            for posting in postings:
                earlier = known.get(posting.idempotency_key)
                account = accounts.get(posting.login)
                if earlier is not None:
                    outcomes.append(Posted(earlier, duplicate=True))
                elif account is None:
                    outcomes.append(LookupError(f"Account {posting.login} not found"))
                else:
                    before = audit.snapshot(account)
                    row = ledger.entry(
                        account,
                        posting.event_type,
                        reference_type=posting.reference_type,
                        reference_id=posting.reference_id,
                        idempotency_key=posting.idempotency_key,
                        description=posting.description,
                        at=posting.at,
                        balance_delta=posting.balance_delta,
                        credit_delta=posting.credit_delta,
                        margin_delta=posting.margin_delta,
                    )
                    known[posting.idempotency_key] = row
                    rows.append(row)
                    audits.append(ledger.entry_audit(account, before, row, posting.source))
                    outcomes.append(Posted(row))
            if rows:  # one multi-row INSERT per table (Core: no ORM bookkeeping per row)
                await session.execute(insert(_TABLE), rows)
                await session.execute(insert(_AUDIT), audits)
        return outcomes
