"""The event names partners subscribe to, and how kernel events map onto them.

Names of both seeds are accepted on every path. ZT4 names
(``zt4-propfirm-partner-api.txt``, "Webhooks") are the kernel's own event types.
FXPropTech names (``fxproptech-rest-api.txt``, "Available Events") are derived:

============================  ===========================================
FXPropTech name               kernel event(s)
============================  ===========================================
``evaluation.started``        ``account.created``
``evaluation.passed``         ``phase.passed``
``evaluation.failed``         ``phase.failed`` (every breach also emits it)
``payout.completed``          ``payout.processed``
``trader.created``, ``trader.kyc_passed``, ``payout.requested``,
``payment.confirmed``, ``risk.violation_flagged``: the kernel event of that name
============================  ===========================================

Broker extensions (in neither seed; kernel events of that name, emitted by the
challenges plugin): ``payout.rejected`` (a declined payout: its numbers and
``reason``), ``payout.failed`` (a payout that could not be processed at approval: its
numbers and ``reason``), ``account.reset`` (reset/retake of a phase),
``account.scaled`` (a funded account grown by the scaling plan).

``trader.kyc_passed`` is emitted by the challenges plugin when a customer's KYC
status becomes ``approved`` (``POST /webhooks/kyc``; the kernel's own event is
``customer.kyc_status_changed``): one per prop account of the customer, routed to the
account's tenant.

A subscription listing both a kernel name and its FXPropTech alias receives one
message under each name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

ZT4_EVENTS = (
    "account.created",
    "account.breached",
    "target.reached",
    "phase.passed",
    "phase.failed",
    "drawdown.warning",
    "order.opened",
    "order.closed",
    "equity.threshold",
    "payout.requested",
    "payout.processed",
)
FXPROPTECH_EVENTS = (
    "trader.created",
    "trader.kyc_passed",
    "evaluation.started",
    "evaluation.passed",
    "evaluation.failed",
    "payout.requested",
    "payout.completed",
    "payment.confirmed",
    "risk.violation_flagged",
)
#: The broker's own lifecycle events, beyond both seeds.
BROKER_EVENTS = ("payout.rejected", "payout.failed", "account.reset", "account.scaled")
#: Every name a subscription may list: the seeds' in their order, then the broker's.
EVENT_NAMES: tuple[str, ...] = tuple(dict.fromkeys(ZT4_EVENTS + FXPROPTECH_EVENTS + BROKER_EVENTS))

_ALIASES: Mapping[str, tuple[str, ...]] = {
    "account.created": ("evaluation.started",),
    "phase.passed": ("evaluation.passed",),
    "phase.failed": ("evaluation.failed",),
    "payout.processed": ("payout.completed",),
}
_DERIVED = frozenset(alias for names in _ALIASES.values() for alias in names)

#: Kernel events that carry only ``login``; their tenant is the prop account's.
LOGIN_ROUTED = frozenset({"order.opened", "order.closed"})

STANDARD = "standard"
FXPROPTECH = "fxproptech"


def subscribed_names(kernel_type: str) -> tuple[str, ...]:
    """The subscription names a kernel event is delivered under (empty: none)."""
    own = (kernel_type,) if kernel_type in EVENT_NAMES and kernel_type not in _DERIVED else ()
    return own + _ALIASES.get(kernel_type, ())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def render(
    style: str, name: str, event_id: str, occurred_at: datetime, data: Mapping[str, Any]
) -> str:
    """The JSON body of one message.

    ``standard``: the Standard Webhooks envelope ``{"type", "timestamp", "data"}``;
    ``fxproptech``: ``{"event", "id", "ts", "data"}`` (``ts`` to the second, as the
    seed's example). ``data`` is the kernel event's payload (money as strings); in
    the ``fxproptech`` style it also carries the seed's ``trader_id``: the prop
    account's id (``account_id``; an FXPropTech trader is the prop account).
    """
    if style == FXPROPTECH:
        ts = occurred_at.astimezone(UTC).replace(microsecond=0)
        if "account_id" in data:
            data = {"trader_id": data["account_id"], **data}
        envelope: dict[str, Any] = {"event": name, "id": event_id, "ts": _iso(ts), "data": data}
    else:
        envelope = {"type": name, "timestamp": _iso(occurred_at), "data": data}
    return json.dumps(envelope, separators=(",", ":"))
