"""ACME risk: a third-party brokerkernel plugin used by the kernel's discovery tests.

It is shaped like any external plugin distribution: the ``acme_risk`` entry point in
group ``brokerkernel.plugins`` names this module, which has a ``CONFIG_SCHEMA`` for its
``[plugins.acme_risk]`` section and ``@hookimpl`` functions.

* ``broker_register_risk_rules`` registers the pre-trade rule ``acme_max_volume``: an
  order whose volume (lots) is above ``max_volume`` is rejected with reason
  ``ACME_MAX_VOLUME``; exactly ``max_volume`` lots pass.
* ``broker_on_event`` appends every domain event it is given to :data:`SEEN_EVENTS`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import PluginContext, PreTradeCheck, Rejection, RiskRule
from brokerkernel.kernel.hookspecs import hookimpl

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    # additionalProperties is left out on purpose: the kernel closes the schema.
    "properties": {
        "max_volume": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 50,
            "description": "Largest order volume in lots; larger orders are rejected.",
        },
        "api_key": {
            "type": "string",
            "writeOnly": True,
            "default": "",
            "description": "ACME risk-service API key (a secret: redacted when shown).",
        },
    },
}

RULE_NAME = "acme_max_volume"
REJECT_REASON = "ACME_MAX_VOLUME"

SEEN_EVENTS: list[Any] = []
"""Every event ``broker_on_event`` received, in order (inspected by tests)."""


class MaxVolumeRule:
    """Rejects orders above the configured ``max_volume`` (lots)."""

    def __init__(self, context: PluginContext) -> None:
        self.max_volume = Decimal(str(context.config["max_volume"]))

    def check(self, order: PreTradeCheck) -> Rejection | None:
        """``Rejection('ACME_MAX_VOLUME')`` when ``order.volume > max_volume``, else None."""
        if order.volume > self.max_volume:
            return Rejection(REJECT_REASON)
        return None


@hookimpl
def broker_register_risk_rules() -> list[RiskRule]:
    """The ``acme_max_volume`` pre-trade rule."""
    return [RiskRule(name=RULE_NAME, factory=MaxVolumeRule)]


@hookimpl
def broker_on_event(event: Any) -> None:
    """Record the event so tests can see the kernel's fan-out reached this plugin."""
    SEEN_EVENTS.append(event)
