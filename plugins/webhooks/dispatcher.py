"""From domain events to delivery rows.

The dispatcher is a batch subscriber of the kernel's event bus
(``bus.subscribe_batch``): each relay batch (or Redis Stream read) becomes its
deliveries in one transaction: one query for the subscriptions of the batch's
tenants, one for its login-routed events, one multi-row insert. Events reach it at
least once: the in-process bus marks outbox rows published only after every
subscriber ran, and Redis Streams acknowledge entries after their handlers ran,
re-claiming entries of a consumer that died (``kernel/events.py``). A repeated event
adds nothing: deliveries are unique on (event id, subscription, event name) and
inserted with ``ON CONFLICT DO NOTHING``. Because both buses log and swallow a
subscriber's exception, a failed insert is retried here a few times before the batch
is given up (logged with its first event id).

Tenant routing: the payload's ``tenant_id``; ``order.opened`` / ``order.closed`` carry
only ``login`` and are routed through the challenges plugin's ``prop_accounts`` table
(login -> tenant, revision 0009) with a plain SQL join, so this plugin does not import
the challenges plugin; a login that is no prop account has no partner to notify.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import timedelta

from sqlalchemy import Integer, bindparam, column, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.security import WallClock
from brokerkernel.kernel.storage.db import Database
from brokerkernel.plugins.webhooks.catalog import LOGIN_ROUTED, render, subscribed_names
from brokerkernel.plugins.webhooks.models import DELIVERIES, WebhookSubscription

log = logging.getLogger(__name__)

#: How often an insert that failed is tried again, and the first pause (doubling).
INSERT_TRIES = 4
INSERT_PAUSE_S = 0.2

_BY_LOGIN = (
    text(
        "SELECT p.login, s.id, s.events, s.style FROM webhook_subscriptions s "
        "JOIN prop_accounts p ON p.tenant_id = s.tenant_id "
        "WHERE p.login IN :logins AND s.enabled"
    )
    .bindparams(bindparam("logins", expanding=True))
    .columns(
        column("login", Integer),
        WebhookSubscription.id,
        WebhookSubscription.events,
        WebhookSubscription.style,
    )
)
_COLUMNS = (WebhookSubscription.id, WebhookSubscription.events, WebhookSubscription.style)
#: ``(subscription id, subscribed names, style)`` of one enabled subscription.
Target = tuple[str, list[str], str]
#: Whose subscriptions an event goes to: ``("tenant", tenant id)`` or ``("login", login)``.
Route = tuple[str, str | int]


def _route(event: DomainEvent) -> Route | None:
    """The event's partner: its payload's ``tenant_id``, else (for ``order.*``) its
    integer ``login``; None when it has none (the broker's own, or a malformed login,
    which must not sink the rest of its batch)."""
    tenant_id = event.payload.get("tenant_id")
    if tenant_id is not None:
        return ("tenant", str(tenant_id))
    login = event.payload.get("login")
    if event.type in LOGIN_ROUTED and isinstance(login, int):
        return ("login", login)
    return None


def _deliveries(event: DomainEvent, targets: Sequence[Target]) -> Iterator[tuple[str, str, str]]:
    """``(subscription id, event name, body)`` of each delivery ``event`` makes: one per
    target and catalog name it subscribed to; targets of one style share a rendering."""
    bodies: dict[tuple[str, str], str] = {}
    for subscription_id, subscribed, style in targets:
        for name in subscribed_names(event.type):
            if name not in subscribed:
                continue
            body = bodies.get((style, name))
            if body is None:
                body = bodies[style, name] = render(
                    style, name, event.id, event.occurred_at, event.payload
                )
            yield subscription_id, name, body


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
        dialect = sqlite if db.is_sqlite else postgresql
        # RETURNING: the rows actually inserted (a repeated event adds none); it also
        # makes SQLAlchemy send multi-row INSERTs ("insertmanyvalues") on both backends.
        self._insert_rows = (
            dialect.insert(DELIVERIES).on_conflict_do_nothing().returning(DELIVERIES.c.id)
        )

    async def _targets(
        self, session: AsyncSession, routes: Collection[Route]
    ) -> dict[Route, list[Target]]:
        """The enabled subscriptions of the routes' tenants and logins (two queries)."""
        tenants = {key for kind, key in routes if kind == "tenant"}
        logins = sorted({key for kind, key in routes if kind == "login"})
        found: dict[Route, list[Target]] = defaultdict(list)
        if tenants:
            of_tenants = await session.execute(
                select(WebhookSubscription.tenant_id, *_COLUMNS).where(
                    WebhookSubscription.tenant_id.in_(tenants),
                    WebhookSubscription.enabled.is_(True),
                )
            )
            for tenant_id, subscription_id, names, style in of_tenants:
                found["tenant", tenant_id].append((subscription_id, list(names), style))
        if logins:
            of_logins = await session.execute(_BY_LOGIN, {"logins": logins})
            for login, subscription_id, names, style in of_logins:
                found["login", login].append((subscription_id, list(names), style))
        return found

    async def on_events(self, events: Sequence[DomainEvent]) -> None:
        """The bus's batch handler (see the module docstring)."""
        wanted = [
            (event, route)
            for event in events
            if subscribed_names(event.type) and (route := _route(event)) is not None
        ]
        if not wanted:
            return
        for attempt in range(INSERT_TRIES):
            try:
                inserted = await self._insert(wanted)
                break
            except DBAPIError:
                if attempt == INSERT_TRIES - 1:
                    log.exception(
                        "webhooks: %d events from %s were not dispatched",
                        len(wanted),
                        wanted[0][0].id,
                    )
                    return
                await asyncio.sleep(INSERT_PAUSE_S * 2**attempt)
        if inserted:
            self._wake()

    async def _insert(self, events: Sequence[tuple[DomainEvent, Route]]) -> int:
        # One session for the lookups and the insert, committed by hand: a
        # Database.transaction() would wake the outbox relay.
        async with self._db.sessions() as session:
            found = await self._targets(session, {route for _, route in events})
            now = self._wall.now()
            due = now + self._first_delay
            rows = [
                {
                    "id": f"msg_{secrets.token_hex(16)}",  # 128 random bits
                    "subscription_id": subscription_id,
                    "event_id": event.id,
                    "event_type": name,
                    "body": body,
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": due,
                    "created_at": now,
                }
                for event, route in events
                for subscription_id, name, body in _deliveries(event, found.get(route, []))
            ]
            if not rows:
                return 0
            inserted = len((await session.execute(self._insert_rows, rows)).all())
            await session.commit()
        return inserted
