"""brokerkernel: a plugin-based broker kernel for forex/CFD/crypto brokers and prop firms.

Plugin authors need only this module::

    from brokerkernel import hookimpl, PriceFeed

    CONFIG_SCHEMA = {"type": "object", "properties": {...}}

    @hookimpl
    def broker_register_price_feeds():
        yield PriceFeed(name="my_feed", factory=MyFeed)

and an entry point in the group ``brokerkernel.plugins`` whose name is the plugin's
name and its ``[plugins.<name>]`` section in ``plugins.toml``.
"""

from brokerkernel.kernel.descriptors import (
    CallbackRejected,
    CashierRequest,
    CashierSession,
    ExecutionVenue,
    Fill,
    FillRequest,
    Gateway,
    GatewayError,
    HttpRoutes,
    KycProvider,
    MessagingChannel,
    PaymentGateway,
    PaymentUpdate,
    PluginContext,
    PreTradeCheck,
    PriceFeed,
    PropRuleSet,
    QuoteAdjuster,
    Rejection,
    RiskRule,
    WebhookReply,
)
from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.pricing import Quote

__all__ = [
    "CallbackRejected",
    "CashierRequest",
    "CashierSession",
    "DomainEvent",
    "ExecutionVenue",
    "Fill",
    "FillRequest",
    "Gateway",
    "GatewayError",
    "HttpRoutes",
    "KycProvider",
    "MessagingChannel",
    "PaymentGateway",
    "PaymentUpdate",
    "PluginContext",
    "PreTradeCheck",
    "PriceFeed",
    "PropRuleSet",
    "Quote",
    "QuoteAdjuster",
    "Rejection",
    "RiskRule",
    "WebhookReply",
    "hookimpl",
]
