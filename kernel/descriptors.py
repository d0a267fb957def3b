"""Typed, frozen descriptors that plugins return from ``broker_register_*`` hooks.

The kernel collects every descriptor once at startup into a typed registry per kind
(:mod:`brokerkernel.kernel.plugins`) and fails on duplicate names, naming both
plugins. Hot paths (ticks, order execution, risk evaluation) call the objects the
factories built, never pluggy.

Each ``factory`` is called once with a :class:`PluginContext` holding the owning
plugin's validated ``plugins.toml`` section and the kernel services it may use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from aiohttp import web

    from brokerkernel.kernel.clock import MarketClock
    from brokerkernel.kernel.pricing import Quote
    from brokerkernel.kernel.risk.rules import TickRule


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What a descriptor factory receives.

    ``plugin`` is the plugin's name, ``config`` its validated section (defaults
    applied, ``${ENV}`` references resolved), ``clock`` the market clock and
    ``kernel`` the running kernel (typed ``Any`` to keep plugins decoupled from it).
    """

    plugin: str
    config: Mapping[str, Any]
    clock: MarketClock
    kernel: Any = None


# --- pricing -----------------------------------------------------------------------


class Feed(Protocol):
    """A running price feed built by a :class:`PriceFeed` factory."""

    def symbols(self) -> Sequence[str]:
        """Symbols this feed quotes."""

    async def run(self, publish: Callable[[Quote], bool]) -> None:
        """Hand every tick to ``publish`` until the feed ends or is cancelled."""


@dataclass(frozen=True, slots=True)
class PriceFeed:
    """A source of quotes. ``drives_clock`` feeds (replay, manual) set market time."""

    name: str
    factory: Callable[[PluginContext], Feed]
    drives_clock: bool = False


class Adjuster(Protocol):
    def adjust(self, quote: Quote, terms: SymbolTerms) -> Quote:
        """Return the quote the account's group sees (e.g. widened by a markup)."""


@dataclass(frozen=True, slots=True)
class QuoteAdjuster:
    """Transforms a raw quote into the quote a group trades at (spread markup, ...).

    Adjusters run in ascending ``order`` at fill time and when a per-group price is shown.
    """

    name: str
    factory: Callable[[PluginContext], Adjuster]
    order: int = 100


@dataclass(frozen=True, slots=True)
class SymbolTerms:
    """An instrument's terms for one group, after group overrides (null inherits).

    Prices in quote currency; ``spread_markup_pips`` in pips of ``pip_size``;
    volumes in lots; ``margin_rate`` a fraction of notional (0.01 = 1%), capped by
    the account's leverage on the leveraged modes (:mod:`brokerkernel.kernel.trading.margin`).
    ``calc_mode`` is an MT5 calculation mode: FOREX, FOREX_NO_LEVERAGE, CFD,
    CFDLEVERAGE, CFDINDEX (needs ``tick_size`` and ``tick_price``) or FUTURES (needs
    those and ``initial_margin``, per lot in the profit currency); ``tick_price`` is
    the value of one ``tick_size`` move of one lot in the profit currency.
    ``commission_type`` / ``commission_value`` are the group override's, else the
    group's (seed section 16). ``swap_type`` (points, percent or money),
    ``swap_long`` and ``swap_short`` are the group's swap-config rates, else the
    instrument's, before the group's multiplier; ``swap_triple_day`` is the weekday
    (``monday`` .. ``sunday``) charged three nights, None for none (DOMAIN.md, swaps).
    """

    symbol: str
    calc_mode: str
    digits: int
    pip_size: Decimal
    contract_size: Decimal
    min_lot: Decimal
    max_lot: Decimal
    lot_step: Decimal
    margin_rate: Decimal
    spread_markup_pips: Decimal
    stale_threshold_ms: int
    base_currency: str
    quote_currency: str
    profit_currency: str
    tradeability: str = "tradable"
    tick_size: Decimal | None = None
    tick_price: Decimal | None = None
    initial_margin: Decimal | None = None
    commission_type: str | None = None
    commission_value: Decimal | None = None
    swap_type: str = "points"
    swap_long: Decimal = Decimal(0)
    swap_short: Decimal = Decimal(0)
    swap_triple_day: str | None = "wednesday"


# --- execution ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FillRequest:
    """A market deal to execute. ``side`` is +1 (buy) or -1 (sell); ``volume`` in lots.

    ``quote`` is the group-adjusted latest quote or None when the feed has none;
    ``now_ms`` is market time (UTC ms) and ``terms`` the group's instrument terms.
    """

    login: int
    side: int
    volume: Decimal
    quote: Quote | None
    terms: SymbolTerms
    now_ms: int


@dataclass(frozen=True, slots=True)
class Fill:
    """An executed deal: ``price`` in quote currency at ``time_ms`` (UTC ms)."""

    price: Decimal
    time_ms: int
    venue: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """A refused order. ``reason`` is the text the order poll returns (seed section 11)."""

    reason: str


class Venue(Protocol):
    async def execute(self, request: FillRequest) -> Fill | Rejection:
        """Fill the deal or reject it; never raises for a business refusal."""


@dataclass(frozen=True, slots=True)
class ExecutionVenue:
    """Where market deals are filled: B-book now, an LP bridge later."""

    name: str
    factory: Callable[[PluginContext], Venue]


# --- risk --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreTradeCheck:
    """Everything a pre-trade rule may look at; money in account currency (Decimal).

    ``required_margin`` is what the deal adds to the account's margin used at
    ``price`` (on a hedging account the group's hedged-margin charge after the deal
    minus before it, :mod:`brokerkernel.kernel.trading.margin`: 0 or negative for a
    hedging leg); ``margin_used`` and ``equity`` are the account's before the deal. ``sl``/``tp``
    are the new position's stops (None: none), ``time_ms`` market time (UTC ms) and
    ``notional_usd`` the deal's notional in USD (None without a USD rate).

    ``origin`` is the deal's origin (a market order's request id, ``pending:<id>`` for
    a pending order triggering). ``closing`` True: the trader closes ``volume`` lots
    (a close request, or the closing part of a netting deal; ``side`` the closing
    deal's, ``required_margin`` 0) — only rules with ``checks_closes = True`` see it.
    """

    login: int
    group: str
    currency: str
    leverage: int
    balance: Decimal
    credit: Decimal
    equity: Decimal
    margin_used: Decimal
    symbol: str
    side: int
    volume: Decimal
    price: Decimal
    required_margin: Decimal
    open_positions: int
    sl: Decimal | None = None
    tp: Decimal | None = None
    time_ms: int = 0
    notional_usd: Decimal | None = None
    origin: str | None = None
    closing: bool = False


class PreTradeRule(Protocol):
    """A pre-trade rule; one setting ``checks_closes = True`` also vets the trader's
    closes (:attr:`PreTradeCheck.closing`)."""

    def check(self, order: PreTradeCheck) -> Rejection | None:
        """Return a Rejection to refuse the order, None to let it through."""


@dataclass(frozen=True, slots=True)
class RiskRule:
    """A pre-trade check run before every market deal (per-tick checks: AccountRule)."""

    name: str
    factory: Callable[[PluginContext], PreTradeRule]


@dataclass(frozen=True, slots=True)
class AccountRule:
    """A per-tick account rule of the risk engine (prop-firm daily-loss / max-loss
    floors, profit targets, ...): the factory builds a
    :class:`~brokerkernel.kernel.risk.rules.TickRule` whose ``name`` equals ``name``;
    it turns each account into equity levels the engine watches on every tick."""

    name: str
    factory: Callable[[PluginContext], TickRule]


# --- money, KYC, messaging, prop firms (factories return provider clients) ----------


@dataclass(frozen=True, slots=True)
class CashierRequest:
    """A cashier session to open for one transaction (seed section 9).

    ``cashier_id`` is the kernel's order id, stored on the transaction and echoed back
    by the provider; ``direction`` "deposit" or "withdrawal"; ``amount`` in
    ``currency`` (major units, Decimal); ``customer_id`` identifies the trader without
    PII (Praxis ``cid``); ``country`` ISO 3166-1 alpha-2; ``locale`` e.g. "en-GB".
    """

    cashier_id: str
    direction: str
    amount: Decimal
    currency: str
    login: int
    customer_id: str
    email: str
    first_name: str = ""
    last_name: str = ""
    country: str | None = None
    phone: str | None = None
    locale: str = "en"


@dataclass(frozen=True, slots=True)
class CashierSession:
    """An opened cashier session: what the front end needs to show the cashier.

    ``redirect_url`` for redirect gateways; ``token`` for embedded ones (BridgerPay's
    cashier token, Stripe's client secret); ``reference`` the provider's id of the
    payment (Stripe PaymentIntent id), when it has one; ``details`` further public
    values (script URL, cashier key, publishable key).
    """

    reference: str | None = None
    redirect_url: str | None = None
    token: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PaymentUpdate:
    """A provider-agnostic payment status: the seed's ``{cashier_id, status,
    gateway_payload}`` (section 8, payment-callback).

    ``status`` is a transaction status (PENDING, IN_PROGRESS, PROCESSING, APPROVED,
    DECLINE, REJECT), or CHARGEBACK / REFUND against an approved deposit;
    ``amount``/``currency`` what the provider processed (REFUND: the amount refunded),
    None when it does not say; ``reference`` the provider's transaction id.
    """

    cashier_id: str
    status: str
    gateway_payload: Mapping[str, Any] = field(default_factory=dict)
    reference: str | None = None
    amount: Decimal | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookReply:
    """The HTTP answer a provider expects to an accepted webhook (e.g. Praxis's signed
    ``{"status": 0, ...}``)."""

    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    status: int = 200


class CallbackRejected(Exception):
    """A webhook that fails verification: missing, tampered or stale signature, or a
    body that is not the provider's format. Nothing is applied; answered 400."""


class GatewayError(Exception):
    """The provider refused or failed a request (or the gateway lacks the operation);
    the message is safe to show to staff."""


class Gateway(Protocol):
    """A payment provider client built by a :class:`PaymentGateway` factory.

    The kernel owns the money: a gateway only talks to its provider and translates
    its wire format into :class:`PaymentUpdate` values.
    """

    def public_config(self) -> Mapping[str, Any]:
        """Values the cashier front end needs (no secrets), shown by gateway resolve."""

    async def create_session(self, request: CashierRequest) -> CashierSession:
        """Open a deposit or withdrawal session; raises GatewayError."""

    async def parse_callback(self, body: bytes, headers: Mapping[str, str]) -> PaymentUpdate | None:
        """Verify a webhook on its raw body and translate it; None when it carries no
        payment status the kernel acts on. Raises CallbackRejected (or GatewayError
        when confirming it with the provider fails)."""

    async def query_status(self, cashier_id: str, reference: str | None) -> PaymentUpdate | None:
        """The provider's current status of a payment; None when it does not know it."""

    async def refund(
        self, reference: str, amount: Decimal, currency: str, idempotency_key: str
    ) -> PaymentUpdate:
        """Refund ``amount`` (``currency``, major units) of the payment ``reference``.
        ``idempotency_key`` is the refund's own cashier id: send it as the provider's
        idempotency key and echo it as the ``cashier_id`` of the result and of later
        callbacks. Raises GatewayError (also when the provider's API has no refunds)."""

    def acknowledge(self) -> WebhookReply:
        """The answer to a webhook that was verified and recorded."""


@dataclass(frozen=True, slots=True)
class PaymentGateway:
    """A payment provider: creates deposit/withdrawal sessions, verifies callbacks.

    ``factory`` builds a :class:`Gateway`. ``kind`` is ``"redirect"`` or ``"embed"``
    (how the cashier front end shows it); ``title`` the name shown to staff;
    ``directions`` what it can process ("deposit", "withdrawal").
    """

    name: str
    factory: Callable[[PluginContext], Gateway]
    kind: str = "redirect"
    title: str = ""
    directions: tuple[str, ...] = ("deposit", "withdrawal")


@dataclass(frozen=True, slots=True)
class KycProvider:
    """An identity-verification provider (applicants, checks, status webhooks)."""

    name: str
    factory: Callable[[PluginContext], Any]


@dataclass(frozen=True, slots=True)
class MessagingChannel:
    """An outbound message channel; ``channel`` is ``"email"`` or ``"sms"``."""

    name: str
    channel: str
    factory: Callable[[PluginContext], Any]


@dataclass(frozen=True, slots=True)
class PropRuleSet:
    """A prop-firm rule (daily loss, max loss, target, ...) usable in challenge plans."""

    name: str
    factory: Callable[[PluginContext], Any]
    config_schema: Mapping[str, Any] = field(default_factory=dict)


# --- HTTP --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpRoutes:
    """Routes a plugin adds to the API before the router freezes.

    ``setup(app, kernel)`` adds routes (and may add ``cleanup_ctx`` entries).
    """

    name: str
    setup: Callable[[web.Application, Any], None]


EventHandler = Callable[[Any], Awaitable[None] | None]
