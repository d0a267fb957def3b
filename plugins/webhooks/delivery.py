"""The delivery worker: claims due deliveries, sends them signed, records every attempt.

Each pass claims up to ``batch_size`` due deliveries of enabled subscriptions with a
lease, in one UPDATE (its subquery uses ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on
SQLite the statement holds the write lock), so several processes never claim one row.
``concurrency`` lanes POST them over the worker's own keep-alive aiohttp session (a
pool of ``concurrency`` connections, no cookie jar, no ``Accept`` headers), each
signed over the stored body bytes; then one transaction writes the batch's attempt
log (one multi-row insert) and its outcomes (one UPDATE per distinct outcome: one
for a batch that all succeeded), while the next batch is claimed and sent. Everything
is in the database, so a restart loses nothing: the next process picks the due rows up
on its first pass, and a lease left by a process that died expires after ``lease_s``.

Outcomes (Standard Webhooks, "Retries"; schedule from the issue):

* 2xx: ``succeeded``.
* 410 Gone: ``failed`` and the subscription is disabled (``disabled_reason``).
* 429: retried no earlier than ``Retry-After`` (seconds or an HTTP date, capped at
  ``max_retry_after_s``) nor the schedule's next delay.
* anything else (other statuses, redirects, timeouts, connection errors, an endpoint
  the SSRF guard refuses at sending time, :mod:`.endpoints`): retried
  after the next delay of ``retry_schedule_s`` (default: immediately, 5 s, 5 min,
  30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h); after ``max_attempts`` attempts ``failed``.

Retry times run on a wall clock (:class:`~brokerkernel.kernel.security.WallClock`,
never the market clock) that tests move with ``offset_s``; the ``webhook-timestamp``
header is the real time of sending, which receivers check against their own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from sqlalchemy import exists, insert, or_, select, update
from yarl import URL

from brokerkernel.kernel.security import WallClock
from brokerkernel.kernel.storage.db import Database
from brokerkernel.plugins.webhooks.endpoints import EndpointGuard
from brokerkernel.plugins.webhooks.models import (
    ATTEMPTS,
    DELIVERIES,
    WebhookDelivery,
    WebhookSubscription,
)
from brokerkernel.plugins.webhooks.signing import Signer

log = logging.getLogger(__name__)

EXCERPT_CHARS = 512
#: Pause after a wake-up, so one pass claims a burst of new deliveries together.
COALESCE_S = 0.01
GONE_REASON = "The endpoint answered 410 Gone"
USER_AGENT = "brokerkernel-webhooks/1"


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    """The ``[plugins.webhooks]`` delivery settings (see the plugin's CONFIG_SCHEMA)."""

    retry_schedule_s: tuple[int, ...]
    max_attempts: int
    timeout_s: float
    concurrency: int
    batch_size: int
    lease_s: int
    poll_interval_s: float
    max_retry_after_s: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DeliverySettings:
        return cls(
            retry_schedule_s=tuple(config["retry_schedule_s"]),
            max_attempts=config["max_attempts"],
            timeout_s=float(config["timeout_s"]),
            concurrency=config["concurrency"],
            batch_size=config["batch_size"],
            lease_s=config["lease_s"],
            poll_interval_s=float(config["poll_interval_s"]),
            max_retry_after_s=config["max_retry_after_s"],
        )

    def delay_before(self, attempt: int) -> timedelta:
        """The wait before attempt number ``attempt`` (1-based) after the previous one;
        past the schedule's end its last delay repeats."""
        schedule = self.retry_schedule_s
        return timedelta(seconds=schedule[min(attempt, len(schedule)) - 1])


@dataclass(frozen=True, slots=True)
class Claimed:
    """A leased delivery and what sending it needs (secrets still sealed; the URL
    parsed once per subscription and claim, not per request)."""

    id: str
    subscription_id: str
    attempts: int
    body: bytes
    url: URL
    secrets: tuple[str, ...]


#: A delivery's values after an attempt: ``(status, last_status_code, last_error,
#: next_attempt_at, completed_at)``; deliveries with equal values share one UPDATE.
Change = tuple[str, int | None, str | None, datetime | None, datetime | None]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one HTTP attempt returned: ``status_code`` None when nothing answered."""

    status_code: int | None
    latency_ms: int
    error: str | None
    excerpt: str | None
    retry_after: str | None


def _retry_after(raw: str | None, now: datetime) -> timedelta | None:
    """``Retry-After`` as seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return timedelta(seconds=int(raw))
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(moment - now, timedelta(0))


class DeliveryWorker:
    """Sends due deliveries (module docstring)."""

    def __init__(
        self,
        db: Database,
        signer: Signer,
        guard: EndpointGuard,
        settings: DeliverySettings,
        wall: WallClock,
    ) -> None:
        self._db = db
        self._signer = signer
        self._guard = guard
        self._settings = settings
        self._wall = wall
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recording: asyncio.Task[None] | None = None
        self._stopping = False
        #: Attempts whose outcome is committed (a counter for benchmarks and tests).
        self.sent = 0

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self) -> None:
        """Finish the pass under way (its requests and records), then exit and close
        the HTTP session (a later :meth:`drain` opens a new one)."""
        if self._task is not None:
            self._stopping = True
            self._wake.set()
            await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        """The worker's keep-alive session (opened on first use): one pooled
        connection per request in flight, names resolved through the SSRF guard
        (:meth:`EndpointGuard.connector_resolver`), no cookies kept from partners'
        answers, no ``Accept``/``Accept-Encoding`` headers."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._settings.concurrency, resolver=self._guard.connector_resolver()
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": USER_AGENT},
                skip_auto_headers=("Accept", "Accept-Encoding"),
                timeout=aiohttp.ClientTimeout(total=self._settings.timeout_s),
            )
        return self._session

    async def drain(self) -> int:
        """Send everything due now, pass after pass, until nothing is due (and no
        pass of this process is under way); returns how many attempts were made."""
        total = 0
        while True:
            async with self._lock:
                count = await self._pass()
            total += count
            if count == 0:
                return total

    async def _run(self) -> None:
        while not self._stopping:
            count = 0
            try:
                async with self._lock:
                    count = await self._pass()
                    if count < self._settings.batch_size:
                        await self._settle()  # nothing more to overlap it with
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook delivery pass failed; retrying")
            if count < self._settings.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval_s)
                # Let a burst of dispatched events accumulate into one claim.
                await asyncio.sleep(COALESCE_S)
                self._wake.clear()
        async with self._lock:
            await self._settle()

    async def _pass(self) -> int:
        """Claim and send one batch; its outcomes are written while the next batch is
        claimed and sent (at most one write in flight). Returns the batch's size; 0
        only once nothing is due and every write has committed."""
        claimed, token = await self._claim()
        if not claimed:
            if self._recording is None:
                return 0
            await self._settle()
            return await self._pass()  # the write may have made retries due
        http = self._http()
        queue = iter(enumerate(claimed))
        found: dict[int, Outcome] = {}
        refused = {url: self._guard.literal_refusal(url) for url in {c.url for c in claimed}}

        async def lane() -> None:
            for index, item in queue:
                reason = refused[item.url]
                found[index] = (
                    await self._send(http, item)
                    if reason is None
                    else Outcome(None, 0, reason, None, None)
                )

        lanes = min(self._settings.concurrency, len(claimed))
        await asyncio.gather(*(lane() for _ in range(lanes)))
        outcomes = [found[index] for index in range(len(claimed))]
        await self._settle()
        self._recording = asyncio.create_task(
            self._record(claimed, outcomes, token), name="webhook-record"
        )
        return len(claimed)

    async def _settle(self) -> None:
        """Wait for the outcome write in flight, if any."""
        task, self._recording = self._recording, None
        if task is not None:
            try:
                await task
            except Exception:
                # The rows keep their lease: they are sent again once it expires.
                log.exception("writing webhook outcomes failed; retried after lease_s")

    async def _claim(self) -> tuple[list[Claimed], str]:
        now = self._wall.now()
        token = str(uuid.uuid4())
        delivery, subscription = WebhookDelivery, WebhookSubscription
        due = (
            select(delivery.id)
            .where(
                delivery.status == "pending",
                delivery.next_attempt_at <= now,
                or_(delivery.lease_expires_at.is_(None), delivery.lease_expires_at < now),
                exists().where(
                    subscription.id == delivery.subscription_id, subscription.enabled.is_(True)
                ),
            )
            .order_by(delivery.next_attempt_at)
            .limit(self._settings.batch_size)
        )
        if not self._db.is_sqlite:
            due = due.with_for_update(skip_locked=True)
        async with self._db.sessions() as session:
            # One UPDATE claims the rows and returns them (no scan for the lease token):
            # atomic on SQLite (the write lock covers the subquery), and on PostgreSQL
            # the subquery skips rows locked by others.
            leased = (
                await session.execute(
                    update(DELIVERIES)
                    .where(DELIVERIES.c.id.in_(due))
                    .values(
                        lease_token=token,
                        lease_expires_at=now + timedelta(seconds=self._settings.lease_s),
                    )
                    .returning(
                        DELIVERIES.c.id,
                        DELIVERIES.c.subscription_id,
                        DELIVERIES.c.attempts,
                        DELIVERIES.c.body,
                        DELIVERIES.c.next_attempt_at,
                    )
                )
            ).all()
            if not leased:
                return [], token
            endpoints = {
                r.id: (
                    URL(r.url),
                    (r.secret,)
                    if r.previous_secret is None or r.previous_secret_expires_at <= now
                    else (r.secret, r.previous_secret),
                )
                for r in await session.execute(
                    select(
                        subscription.id,
                        subscription.url,
                        subscription.secret,
                        subscription.previous_secret,
                        subscription.previous_secret_expires_at,
                    ).where(subscription.id.in_({r.subscription_id for r in leased}))
                )
            }
            await session.commit()
        return [
            Claimed(
                id=r.id,
                subscription_id=r.subscription_id,
                attempts=r.attempts,
                body=r.body.encode(),
                url=endpoints[r.subscription_id][0],
                secrets=endpoints[r.subscription_id][1],
            )
            for r in sorted(leased, key=lambda r: r.next_attempt_at)
        ], token

    async def _send(self, http: aiohttp.ClientSession, item: Claimed) -> Outcome:
        headers = self._signer.headers(item.id, int(time.time()), item.body, item.secrets)
        started = time.perf_counter()
        status: int | None = None
        error = excerpt = retry_after = None
        try:
            async with http.post(
                item.url, data=item.body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                excerpt = (await response.content.read(EXCERPT_CHARS)).decode(errors="replace")
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except TimeoutError:
            error = f"Timed out after {self._settings.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            error = f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS]
        latency_ms = round((time.perf_counter() - started) * 1000)
        return Outcome(
            status, latency_ms, error, excerpt[:EXCERPT_CHARS] if excerpt else None, retry_after
        )

    def _next(self, item: Claimed, outcome: Outcome, now: datetime) -> Change:
        """The delivery's new values after ``outcome`` (see the module docstring)."""
        attempts = item.attempts + 1
        code, error = outcome.status_code, outcome.error
        if code is not None and 200 <= code < 300:
            return ("succeeded", code, error, None, now)
        if code == 410 or attempts >= self._settings.max_attempts:
            return ("failed", code, error, None, now)
        wait = self._settings.delay_before(attempts + 1)
        if code == 429:
            asked = _retry_after(outcome.retry_after, now)
            if asked is not None:
                cap = timedelta(seconds=self._settings.max_retry_after_s)
                wait = max(wait, min(asked, cap))
        return ("pending", code, error, now + wait, None)

    async def _record(
        self, claimed: Sequence[Claimed], outcomes: Sequence[Outcome], token: str
    ) -> None:
        now = self._wall.now()
        pairs = list(zip(claimed, outcomes, strict=True))
        changes: dict[Change, list[str]] = defaultdict(list)
        for item, outcome in pairs:
            changes[self._next(item, outcome, now)].append(item.id)
        gone = sorted({item.subscription_id for item, o in pairs if o.status_code == 410})
        # Not a Database.transaction(): no outbox rows here, so no relay to wake.
        async with self._db.sessions() as session:
            await session.execute(
                insert(ATTEMPTS),
                [
                    {
                        "delivery_id": item.id,
                        "subscription_id": item.subscription_id,
                        "attempt": item.attempts + 1,
                        "attempted_at": now,
                        "status_code": outcome.status_code,
                        "latency_ms": outcome.latency_ms,
                        "error": outcome.error,
                        "response_excerpt": outcome.excerpt,
                    }
                    for item, outcome in pairs
                ],
            )
            for (status, code, error, next_at, completed_at), ids in changes.items():
                await session.execute(
                    update(DELIVERIES)
                    .where(
                        DELIVERIES.c.id.in_(ids),
                        DELIVERIES.c.lease_token == token,
                        DELIVERIES.c.status == "pending",  # not cancelled meanwhile
                    )
                    .values(
                        status=status,
                        attempts=DELIVERIES.c.attempts + 1,  # the lease holds the row
                        next_attempt_at=next_at,
                        last_status_code=code,
                        last_error=error,
                        completed_at=completed_at,
                        lease_token=None,
                        lease_expires_at=None,
                    )
                )
            if gone:
                await session.execute(
                    update(WebhookSubscription)
                    .where(WebhookSubscription.id.in_(gone))
                    .values(enabled=False, disabled_reason=GONE_REASON, updated_at=now)
                )
            await session.commit()
        self.sent += len(claimed)
