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
    volumes in lots; ``margin_rate`` a fraction of notional (0.01 = 1%).
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

    ``required_margin`` is the margin the new position would add at ``price``;
    ``margin_used`` and ``equity`` are the account's before the deal.
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


class PreTradeRule(Protocol):
    def check(self, order: PreTradeCheck) -> Rejection | None:
        """Return a Rejection to refuse the order, None to let it through."""


@dataclass(frozen=True, slots=True)
class RiskRule:
    """A pre-trade check (and, from the risk engine on, per-tick account checks)."""

    name: str
    factory: Callable[[PluginContext], PreTradeRule]


# --- money, KYC, messaging, prop firms (factories return provider clients) ----------


@dataclass(frozen=True, slots=True)
class PaymentGateway:
    """A payment provider: creates deposit/withdrawal sessions, verifies callbacks.

    ``kind`` is ``"redirect"`` or ``"embed"`` (how the cashier front end shows it).
    """

    name: str
    factory: Callable[[PluginContext], Any]
    kind: str = "redirect"


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
