"""Partner subscriptions: create, read, change, delete, rotate the secret; the
delivery log and its statistics.

Every call is scoped to the caller's tenant: another tenant's subscription answers
404 ``Webhook subscription not found``, never 403.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.security import WallClock
from brokerkernel.kernel.storage.db import Database
from brokerkernel.plugins.webhooks.endpoints import EndpointGuard
from brokerkernel.plugins.webhooks.models import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from brokerkernel.plugins.webhooks.signing import Signer, new_secret

NOT_FOUND = "Webhook subscription not found"
STATUSES = ("pending", "succeeded", "failed", "cancelled")
#: Attempts the latency percentiles of the stats are computed over (the latest ones).
LATENCY_SAMPLE = 1000


class WebhookError(Exception):
    """A refused request: HTTP ``status`` and ``detail``."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def subscription_json(row: WebhookSubscription) -> dict[str, Any]:
    """The API view of a subscription (never its secret)."""
    return {
        "id": row.id,
        "url": row.url,
        "events": list(row.events),
        "description": row.description,
        "format": row.style,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "previous_secret_expires_at": row.previous_secret_expires_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _attempt_json(row: WebhookAttempt) -> dict[str, Any]:
    return {
        "attempt": row.attempt,
        "attempted_at": row.attempted_at,
        "status_code": row.status_code,
        "latency_ms": row.latency_ms,
        "error": row.error,
        "response_excerpt": row.response_excerpt,
    }


def _delivery_json(row: WebhookDelivery, attempts: list[WebhookAttempt]) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "event": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "created_at": row.created_at,
        "completed_at": row.completed_at,
        "attempt_log": [_attempt_json(a) for a in attempts],
    }


def percentile(sorted_values: list[int], pct: int) -> int | None:
    """Nearest-rank percentile (the smallest value with at least ``pct`` percent of the
    sample at or below it); None for an empty sample."""
    if not sorted_values:
        return None
    return sorted_values[max(math.ceil(pct / 100 * len(sorted_values)) - 1, 0)]


class Subscriptions:
    """Subscription storage; ``guard`` vets endpoint URLs (:mod:`.endpoints`), ``wall``
    is the clock of timestamps and grace periods."""

    def __init__(
        self, db: Database, signer: Signer, guard: EndpointGuard, wall: WallClock, grace_s: int
    ) -> None:
        self._db = db
        self._signer = signer
        self._guard = guard
        self._wall = wall
        self._grace = timedelta(seconds=grace_s)

    async def _owned(
        self, session: AsyncSession, tenant_id: str, subscription_id: str
    ) -> WebhookSubscription:
        row = await session.get(WebhookSubscription, subscription_id)
        if row is None or row.tenant_id != tenant_id or row.deleted_at is not None:
            raise WebhookError(404, NOT_FOUND)
        return row

    async def _check_url(self, url: str) -> None:
        """422 ``[{"loc": ["body", "url"], "msg": <why>, "type": "url"}]`` when the
        guard refuses ``url`` (:meth:`EndpointGuard.refusal`)."""
        reason = await self._guard.refusal(url)
        if reason is not None:
            raise WebhookError(422, [{"loc": ["body", "url"], "msg": reason, "type": "url"}])

    async def create(
        self, tenant_id: str, created_by: str, data: Mapping[str, Any], style: str
    ) -> tuple[dict[str, Any], str]:
        """A new enabled subscription; returns ``(view, secret)`` (the secret is shown
        this once). ``data``: ``url``, ``events`` and optionally ``description``.
        Raises :class:`WebhookError` 422 when the guard refuses the URL."""
        await self._check_url(data["url"])
        secret = new_secret()
        now = self._wall.now()
        row = WebhookSubscription(
            id=f"wh_{uuid.uuid4().hex}",
            tenant_id=tenant_id,
            url=data["url"],
            events=list(data["events"]),
            description=data.get("description"),
            style=style,
            enabled=True,
            disabled_reason=None,
            secret=self._signer.seal(secret),
            previous_secret=None,
            previous_secret_expires_at=None,
            created_by=created_by,
            created_at=now,
            updated_at=now,
            deleted_at=None,
        )
        async with self._db.transaction() as session:
            session.add(row)
        return subscription_json(row), secret

    async def list_all(self, tenant_id: str) -> list[dict[str, Any]]:
        """The tenant's subscriptions, oldest first."""
        async with self._db.read() as session:
            rows = await session.scalars(
                select(WebhookSubscription)
                .where(
                    WebhookSubscription.tenant_id == tenant_id,
                    WebhookSubscription.deleted_at.is_(None),
                )
                .order_by(WebhookSubscription.created_at, WebhookSubscription.id)
            )
            return [subscription_json(r) for r in rows]

    async def get(self, tenant_id: str, subscription_id: str) -> dict[str, Any]:
        async with self._db.read() as session:
            return subscription_json(await self._owned(session, tenant_id, subscription_id))

    async def update(
        self, tenant_id: str, subscription_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Change ``url``, ``events``, ``description`` or ``enabled`` (enabling again
        clears ``disabled_reason``; pending deliveries resume). Raises
        :class:`WebhookError` 404 (not the tenant's) or 422 (a refused URL)."""
        if "url" in changes:
            await self._check_url(changes["url"])
        async with self._db.transaction() as session:
            row = await self._owned(session, tenant_id, subscription_id)
            for key in ("url", "description", "enabled"):
                if key in changes:
                    setattr(row, key, changes[key])
            if "events" in changes:
                row.events = list(changes["events"])
            if changes.get("enabled") is True:
                row.disabled_reason = None
            row.updated_at = self._wall.now()
        return subscription_json(row)

    async def delete(self, tenant_id: str, subscription_id: str) -> None:
        """Delete: no new deliveries, pending ones ``cancelled``; the log is kept."""
        now = self._wall.now()
        async with self._db.transaction() as session:
            row = await self._owned(session, tenant_id, subscription_id)
            row.enabled = False
            row.deleted_at = row.updated_at = now
            await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.subscription_id == subscription_id,
                    WebhookDelivery.status == "pending",
                )
                .values(status="cancelled", next_attempt_at=None, completed_at=now)
            )

    async def rotate_secret(
        self, tenant_id: str, subscription_id: str
    ) -> tuple[dict[str, Any], str]:
        """A new secret (returned once); the current one keeps signing next to it for
        the grace period (``rotation_grace_s``), so receivers can switch over."""
        secret = new_secret()
        async with self._db.transaction() as session:
            row = await self._owned(session, tenant_id, subscription_id)
            now = self._wall.now()
            row.previous_secret = row.secret
            row.previous_secret_expires_at = now + self._grace
            row.secret = self._signer.seal(secret)
            row.updated_at = now
        return subscription_json(row), secret

    async def deliveries(
        self, tenant_id: str, subscription_id: str, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """The latest ``limit`` deliveries (most recent first), optionally of one
        ``status``, each with its attempt log."""
        async with self._db.read() as session:
            await self._owned(session, tenant_id, subscription_id)
            query = select(WebhookDelivery).where(
                WebhookDelivery.subscription_id == subscription_id
            )
            if status is not None:
                query = query.where(WebhookDelivery.status == status)
            rows = list(
                await session.scalars(
                    query.order_by(
                        WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc()
                    ).limit(limit)
                )
            )
            attempts: dict[str, list[WebhookAttempt]] = {r.id: [] for r in rows}
            if rows:
                for attempt in await session.scalars(
                    select(WebhookAttempt)
                    .where(WebhookAttempt.delivery_id.in_(list(attempts)))
                    .order_by(WebhookAttempt.id)
                ):
                    attempts[attempt.delivery_id].append(attempt)
        return [_delivery_json(r, attempts[r.id]) for r in rows]

    async def stats(self, tenant_id: str, subscription_id: str) -> dict[str, Any]:
        """Deliveries by status, ``success_rate`` (succeeded / (succeeded + failed),
        4 decimals; None before any delivery completed), ``latency_ms`` p50/p95 of the
        latest answered attempts (nearest rank), the last successful and failed
        attempt times."""
        async with self._db.read() as session:
            await self._owned(session, tenant_id, subscription_id)
            counts = dict.fromkeys(STATUSES, 0)
            for status, count in await session.execute(
                select(WebhookDelivery.status, func.count())
                .where(WebhookDelivery.subscription_id == subscription_id)
                .group_by(WebhookDelivery.status)
            ):
                counts[status] = count
            latencies = sorted(
                await session.scalars(
                    select(WebhookAttempt.latency_ms)
                    .where(
                        WebhookAttempt.subscription_id == subscription_id,
                        WebhookAttempt.status_code.is_not(None),
                    )
                    .order_by(WebhookAttempt.id.desc())
                    .limit(LATENCY_SAMPLE)
                )
            )
            ok = WebhookAttempt.status_code.between(200, 299)
            failed = WebhookAttempt.status_code.is_(None) | ~ok
            last_success, last_failure = (
                await session.execute(
                    select(
                        func.max(case((ok, WebhookAttempt.attempted_at))),
                        func.max(case((failed, WebhookAttempt.attempted_at))),
                    ).where(WebhookAttempt.subscription_id == subscription_id)
                )
            ).one()
        completed = counts["succeeded"] + counts["failed"]
        rate = (
            (Decimal(counts["succeeded"]) / completed).quantize(Decimal("0.0001"))
            if completed
            else None
        )
        return {
            "subscription_id": subscription_id,
            "total": sum(counts.values()),
            "counts": counts,
            "success_rate": rate,
            "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
            "last_success_at": last_success,
            "last_failure_at": last_failure,
        }
