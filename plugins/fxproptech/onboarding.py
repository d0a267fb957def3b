"""The onboarding message of a trader created through ``POST /v1/traders``.

The challenges service emits ``account.created`` (``source`` :data:`SOURCE`) in the
transaction that provisions the account. This bus handler answers it with one outbox
event ``message.onboarding`` for the messaging layer::

    {"tenant_id", "account_id", "trader_id", "login", "plan_id", "phase",
     "customer_id", "email", "first_name", "last_name", "channel": "email",
     "template": "fxproptech.onboarding"}

The bus delivers at least once; the message's outbox id is derived from the
``account.created`` event id (UUID 5), so a redelivery finds it (or hits the unique
id) and nothing is sent twice. A crash between the provisioning and this handler
loses nothing: ``account.created`` stays in the outbox until relayed.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from brokerkernel.kernel.events import DomainEvent, event_row
from brokerkernel.kernel.storage.models import Customer, OutboxEvent

if TYPE_CHECKING:
    from brokerkernel.kernel.runtime import Kernel

SOURCE: Final = "fxproptech"
"""``source`` of the accounts ``POST /v1/traders`` provisions."""
MESSAGE: Final = "message.onboarding"
TEMPLATE: Final = "fxproptech.onboarding"
_NAMESPACE: Final = uuid.UUID("6f1d2b6e-3f0a-4c49-9a55-0f6b1c1e7a01")
_ACCOUNT_KEYS: Final = ("tenant_id", "account_id", "login", "plan_id", "phase", "customer_id")


def message_id(account_created_id: str) -> str:
    """The outbox id of the onboarding message answering an ``account.created`` event."""
    return str(uuid.uuid5(_NAMESPACE, account_created_id))


class Onboarding:
    """Bus handler emitting ``message.onboarding`` (see the module docstring)."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    async def on_event(self, event: DomainEvent) -> None:
        """Answer an ``account.created`` of a trader created through this API."""
        if event.type != "account.created" or event.payload.get("source") != SOURCE:
            return
        db, own_id = self._kernel.db, message_id(event.id)
        try:
            async with db.transaction() as session:
                if await session.scalar(select(OutboxEvent.id).where(OutboxEvent.id == own_id)):
                    return
                customer = await session.get(Customer, event.payload.get("customer_id"))
                if customer is None:
                    return
                payload: dict[str, Any] = {key: event.payload.get(key) for key in _ACCOUNT_KEYS}
                payload |= {
                    "trader_id": event.payload.get("account_id"),
                    "email": customer.email,
                    "first_name": customer.first_name,
                    "last_name": customer.last_name,
                    "channel": "email",
                    "template": TEMPLATE,
                }
                row = event_row(MESSAGE, payload, self._kernel.clock.now())
                session.add(OutboxEvent(**{**row, "id": own_id}))
        except IntegrityError:
            return  # another process answered the same event first
