"""Tables of the webhooks plugin (revision 0010): subscriptions, deliveries, attempts.

A subscription belongs to one partner tenant. A delivery is one message (one event
under one subscribed name) to one subscription: its body is rendered once, so every
retry sends the same bytes; ``status`` is ``pending`` (an attempt is due at
``next_attempt_at``), ``succeeded``, ``failed`` (attempts exhausted, or HTTP 410) or
``cancelled`` (the subscription was deleted).
A worker holding a delivery sets ``lease_token`` / ``lease_expires_at``; a lease that
expires (the process died mid-send) lets another worker claim the row again.
Every HTTP attempt is one ``webhook_attempts`` row. Times are wall-clock UTC.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from brokerkernel.kernel.storage.models import Base


class WebhookSubscription(Base):
    """A partner's endpoint: ``url``, subscribed ``events`` (names of either seed),
    ``style`` ``standard`` (Standard Webhooks envelope) or ``fxproptech``
    (``{"event","id","ts","data"}``). ``secret`` is the sealed ``whsec_`` secret;
    ``previous_secret`` keeps signing until ``previous_secret_expires_at`` after a
    rotation. ``disabled_reason`` says why the endpoint was switched off (HTTP 410);
    a deleted subscription is kept (``deleted_at``, disabled) for its delivery log."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("broker_tenants.id"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(512))
    style: Mapped[str] = mapped_column(String(16))
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(String(256))
    secret: Mapped[str] = mapped_column(String(256))
    previous_secret: Mapped[str | None] = mapped_column(String(256))
    previous_secret_expires_at: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    deleted_at: Mapped[datetime | None]


class WebhookDelivery(Base):
    """One message to one subscription (see the module docstring)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "subscription_id", "event_type"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_subscription_id_created_at", "subscription_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("webhook_subscriptions.id"))
    event_id: Mapped[str] = mapped_column(String(36))
    event_type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(SmallInteger)
    next_attempt_at: Mapped[datetime | None]
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: ``status_code`` (None when no answer),
    ``latency_ms``, ``error`` and the first characters of the response body."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    subscription_id: Mapped[str] = mapped_column(String(40), index=True)
    attempt: Mapped[int] = mapped_column(SmallInteger)
    attempted_at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(SmallInteger)
    latency_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(512))
    response_excerpt: Mapped[str | None] = mapped_column(String(512))


#: The Core tables, for bulk statements (executemany, multi-row inserts).
DELIVERIES: Table = WebhookDelivery.__table__  # type: ignore[assignment]
ATTEMPTS: Table = WebhookAttempt.__table__  # type: ignore[assignment]
