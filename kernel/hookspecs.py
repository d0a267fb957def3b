"""The kernel's hook specifications. Every hook is prefixed ``broker_``.

Two shapes only (ARCHITECTURE.md, "The kernel"):

1. ``broker_register_<kind>()`` returns or yields typed, frozen descriptors from
   :mod:`brokerkernel.kernel.descriptors`. The kernel calls each plugin's
   implementation once at startup, records which plugin registered what, builds the
   objects with the plugin's config and fails on a duplicate name, naming both plugins.
2. ``broker_on_<event>(...)`` fan-out notifications. Each implementation is called on
   its own; one that raises is logged with its plugin name and the others still run.
   An implementation may return a coroutine; the kernel awaits it.

No hook is ``firstresult``: nothing here is a single decision. pluggy is never on a
hot path: ticks, order execution and risk evaluation call the built objects directly.

A plugin is a module (or object) with ``@hookimpl`` functions and an optional
``CONFIG_SCHEMA`` (Draft 2020-12 JSON Schema of its ``[plugins.<name>]`` section;
``writeOnly: true`` marks secrets).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any

import pluggy

from brokerkernel.kernel.descriptors import (
    AccountRule,
    ExecutionVenue,
    HttpRoutes,
    KycProvider,
    MessagingChannel,
    PaymentGateway,
    PriceFeed,
    PropRuleSet,
    QuoteAdjuster,
    RiskRule,
)

PROJECT = "brokerkernel"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- pricing -----------------------------------------------------------------------


@hookspec
def broker_register_price_feeds() -> Iterable[PriceFeed]:
    """Price feeds this plugin offers.

    Called once at startup. Each feed's ``run(publish)`` is started as a task and hands
    every tick to the kernel's quote book (cache, clock, subscribers).
    """
    raise NotImplementedError


@hookspec
def broker_register_quote_adjusters() -> Iterable[QuoteAdjuster]:
    """Quote adjusters (e.g. a group's spread markup) applied at fill time and display.

    Called once at startup; adjusters run in ascending ``order``.
    """
    raise NotImplementedError


# --- execution and risk ---------------------------------------------------------------


@hookspec
def broker_register_execution_venues() -> Iterable[ExecutionVenue]:
    """Execution venues that fill market deals against a quote (B-book, LP bridge).

    Called once at startup; the kernel routes orders to the venue named in
    ``[kernel] execution_venue``.
    """
    raise NotImplementedError


@hookspec
def broker_register_risk_rules() -> Iterable[RiskRule]:
    """Risk rules: pre-trade checks run, in name order, before every market deal.

    Called once at startup. A rule's Rejection stops the order with its reason and
    nothing is written.
    """
    raise NotImplementedError


@hookspec
def broker_register_account_rules() -> Iterable[AccountRule]:
    """Per-tick account rules of the risk engine (prop-firm floors, targets, ...).

    Called once at startup. The kernel builds each rule and hands it to the risk engine
    next to the built-in stop-out and margin-call rules; the rule turns an account into
    equity levels (:mod:`brokerkernel.kernel.risk.rules`) whenever the account changes,
    the engine compares them with live equity on every tick and emits a crossing per
    level passed.
    """
    raise NotImplementedError


# --- money, KYC, messaging, prop firms ------------------------------------------------


@hookspec
def broker_register_payment_gateways() -> Iterable[PaymentGateway]:
    """Payment gateways: each descriptor's factory builds a
    :class:`~brokerkernel.kernel.descriptors.Gateway` (cashier sessions, webhook
    verification into provider-agnostic ``PaymentUpdate`` values, status queries,
    refunds). The kernel's payment service owns routing, transactions and the money."""
    raise NotImplementedError


@hookspec
def broker_register_kyc_providers() -> Iterable[KycProvider]:
    """KYC providers (applicant creation, verification status)."""
    raise NotImplementedError


@hookspec
def broker_register_messaging_channels() -> Iterable[MessagingChannel]:
    """Outbound email/SMS channels."""
    raise NotImplementedError


@hookspec
def broker_register_prop_rules() -> Iterable[PropRuleSet]:
    """Prop-firm rules that challenge plans can reference by name."""
    raise NotImplementedError


# --- HTTP ----------------------------------------------------------------------------


@hookspec
def broker_register_routes() -> Iterable[HttpRoutes]:
    """HTTP routes this plugin adds; their ``setup`` runs before the router freezes."""
    raise NotImplementedError


# --- lifecycle and domain events ---------------------------------------------------------


@hookspec
def broker_on_startup(kernel: Any) -> Awaitable[None] | None:
    """The kernel has started (storage open, registries built, feeds not yet running)."""


@hookspec
def broker_on_shutdown(kernel: Any) -> Awaitable[None] | None:
    """The kernel is stopping; release what ``broker_on_startup`` acquired."""


@hookspec
def broker_on_event(event: Any) -> Awaitable[None] | None:
    """A domain event (:class:`brokerkernel.kernel.events.DomainEvent`) was published.

    Events come from the transactional outbox after their transaction committed, at
    least once; ``event.id`` is stable, so handlers de-duplicate on it.
    """
