"""From domain events to delivery rows.

The dispatcher is a subscriber of the kernel's event bus. Events reach it from the
transactional outbox at least once: the in-process bus marks an outbox row published
only after every subscriber ran, and Redis Streams acknowledge an entry after its
handlers ran, re-claiming entries of a consumer that died (``kernel/events.py``).
A repeated event adds nothing: deliveries are unique on (event id, subscription,
event name) and inserted with ``ON CONFLICT DO NOTHING``. Because both buses log and
swallow a subscriber's exception, a failed insert is retried here a few times before
the event is given up (logged with its id).

Tenant routing: the payload's ``tenant_id``; ``order.opened`` / ``order.closed`` carry
only ``login`` and are routed through the challenges plugin's ``prop_accounts`` table
(login -> tenant, revision 0009) with a plain SQL join, so this plugin does not import
the challenges plugin; a login that is no prop account has no partner to notify.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.security import WallClock
from brokerkernel.kernel.storage.db import Database
from brokerkernel.plugins.webhooks.catalog import LOGIN_ROUTED, render, subscribed_names
from brokerkernel.plugins.webhooks.models import WebhookDelivery, WebhookSubscription

log = logging.getLogger(__name__)

#: How often an insert that failed is tried again, and the first pause (doubling).
INSERT_TRIES = 4
INSERT_PAUSE_S = 0.2

_BY_LOGIN = text(
    "SELECT s.id, s.events, s.style FROM webhook_subscriptions s "
    "JOIN prop_accounts p ON p.tenant_id = s.tenant_id "
    "WHERE p.login = :login AND s.enabled"
)
_COLUMNS = (WebhookSubscription.id, WebhookSubscription.events, WebhookSubscription.style)


class Dispatcher:
    """Turns each domain event into one pending delivery per matching subscription
    and subscribed name, due ``first_delay`` after dispatch (the retry schedule's
    first entry: immediately by default); ``wake`` is called after new rows commit."""

    def __init__(
        self, db: Database, wall: WallClock, first_delay: timedelta, wake: Callable[[], None]
    ) -> None:
        self._db = db
        self._wall = wall
        self._first_delay = first_delay
        self._wake = wake

    async def _targets(
        self, session: AsyncSession, event: DomainEvent
    ) -> Sequence[tuple[str, list[str], str]]:
        """``(subscription id, events, style)`` of the enabled subscriptions of the
        event's tenant."""
        tenant_id = event.payload.get("tenant_id")
        if tenant_id is not None:
            query: Any = select(*_COLUMNS).where(
                WebhookSubscription.tenant_id == str(tenant_id),
                WebhookSubscription.enabled.is_(True),
            )
            result = await session.execute(query)
        elif event.type in LOGIN_ROUTED and event.payload.get("login") is not None:
            result = await session.execute(
                _BY_LOGIN.columns(*_COLUMNS), {"login": int(event.payload["login"])}
            )
        else:
            return []
        return [(r[0], list(r[1]), r[2]) for r in result]

    async def on_event(self, event: DomainEvent) -> None:
        """The bus handler (see the module docstring)."""
        names = subscribed_names(event.type)
        if not names:
            return
        for attempt in range(INSERT_TRIES):
            try:
                inserted = await self._insert(event, names)
                break
            except DBAPIError:
                if attempt == INSERT_TRIES - 1:
                    log.exception("webhooks: event %s %s was not dispatched", event.type, event.id)
                    return
                await asyncio.sleep(INSERT_PAUSE_S * 2**attempt)
        if inserted:
            self._wake()

    async def _insert(self, event: DomainEvent, names: Sequence[str]) -> int:
        # One session for the lookup and the insert, committed by hand: a
        # Database.transaction() would wake the outbox relay after every event.
        async with self._db.sessions() as session:
            targets = await self._targets(session, event)
            now = self._wall.now()
            rows = [
                {
                    "id": f"msg_{uuid.uuid4().hex}",
                    "subscription_id": subscription_id,
                    "event_id": event.id,
                    "event_type": name,
                    "body": render(style, name, event.id, event.occurred_at, event.payload),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": now + self._first_delay,
                    "created_at": now,
                }
                for subscription_id, events, style in targets
                for name in names
                if name in events
            ]
            if not rows:
                return 0
            dialect = sqlite if self._db.is_sqlite else postgresql
            insert = dialect.insert(WebhookDelivery).values(rows).on_conflict_do_nothing()
            await session.execute(insert)
            await session.commit()
        return len(rows)
