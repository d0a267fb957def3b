"""An instrument's terms for a group (catalog + group override, null inherits) and the
in-memory :class:`TermsCache` every hot path reads them from.

Platform configuration (instruments, groups, group instrument overrides and swap
config; seed sections 15 and 16) changes rarely and is read on every order, tick and
swap run. The :class:`TermsCache` holds it in memory: loaded at kernel start, reloaded
by the process that changed it right after its commit, and by every other process
when the ``platform.config_changed`` domain event that the change recorded in its
transaction (:func:`record_config_change`) reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.descriptors import SymbolTerms
from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.storage.models import Group, GroupInstrument, Instrument
from brokerkernel.kernel.trading.margin import FULL_MARGIN, HedgedMargin

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

    from brokerkernel.kernel.events import DomainEvent
    from brokerkernel.kernel.storage.db import Database

log = logging.getLogger(__name__)

#: Domain event recorded with every change of instruments, groups or overrides.
CONFIG_CHANGED = "platform.config_changed"
#: Redis pub/sub channel on which the process handling the event tells the others.
CONFIG_CHANNEL = "brokerkernel:{db}:platform-config"
#: Tradeability from least to most restrictive (seed section 16).
TRADEABILITY = ("tradable", "close_only", "non_tradable")

_DECIMAL_FIELDS = (
    "pip_size",
    "contract_size",
    "min_lot",
    "max_lot",
    "lot_step",
    "margin_rate",
    "spread_markup_pips",
    "tick_size",
    "tick_price",
    "initial_margin",
    "commission_value",
    "swap_long",
    "swap_short",
)


@dataclass(frozen=True, slots=True)
class GroupSettings:
    """A trading group's settings (seed section 16).

    ``margin_call_level`` and ``stopout_level`` are margin levels in percent
    (equity / margin x 100); ``max_exposure`` is in USD (None: unlimited), gross
    unless ``net_max_exposure``; ``commission_value`` is in the group currency;
    ``swap_free`` is already true for Islamic groups; ``swap_free_days`` counts days
    after account creation without swaps; ``hedged_margin`` is the policy charging
    opposite positions of hedging accounts (:mod:`~brokerkernel.kernel.trading.margin`).
    """

    id: str
    name: str
    currency: str
    default_leverage: int
    margin_call_level: Decimal
    stopout_level: Decimal
    commission_type: str | None
    commission_value: Decimal | None
    swap_free: bool
    swap_enabled: bool
    swap_multiplier: Decimal
    swap_free_days: int
    is_islamic: bool
    is_default: bool
    max_exposure: Decimal | None
    net_max_exposure: bool
    is_active: bool
    hedged_margin: HedgedMargin = FULL_MARGIN

    @classmethod
    def from_row(cls, group: Group) -> GroupSettings:
        return cls(
            id=group.id,
            name=group.name,
            currency=group.currency,
            default_leverage=group.default_leverage,
            margin_call_level=group.margin_call_level,
            stopout_level=group.stopout_level,
            commission_type=group.commission_type,
            commission_value=group.commission_value,
            swap_free=group.swap_free or group.is_islamic,
            swap_enabled=group.swap_enabled,
            swap_multiplier=group.swap_multiplier,
            swap_free_days=group.swap_free_days,
            is_islamic=group.is_islamic,
            is_default=group.is_default,
            max_exposure=group.max_exposure,
            net_max_exposure=group.net_max_exposure,
            is_active=group.is_active,
            hedged_margin=HedgedMargin(group.hedged_margin_mode, group.hedged_margin_rate),
        )


def resolve_terms(
    instrument: Instrument,
    override: GroupInstrument | None,
    group: GroupSettings | None = None,
) -> SymbolTerms:
    """Merge the catalog row with the group's override (a null override field inherits).

    Tradeability is the most restrictive of the broker-level value (a disabled or
    inactive instrument is ``non_tradable``) and the group's. Commission is the
    override's pair, else the group's; swap rates the override's trio (swap config),
    else the instrument's.
    """

    def pick(name: str, inherited: Any) -> Any:
        value = getattr(override, name, None) if override is not None else None
        return inherited if value is None else value

    broker_level = instrument.tradeability or "tradable"
    if not instrument.is_enabled or not instrument.is_active:
        broker_level = "non_tradable"
    group_level = pick("tradeability", "tradable")
    tradeability = max(broker_level, group_level, key=TRADEABILITY.index)
    commission: tuple[str | None, Decimal | None]
    if override is not None and override.commission_type is not None:
        commission = (override.commission_type, override.commission_value)
    elif group is not None:
        commission = (group.commission_type, group.commission_value)
    else:
        commission = (None, None)
    if override is not None and override.swap_type is not None:
        swap = (override.swap_type, override.swap_long, override.swap_short)
    else:
        swap = (instrument.swap_type, instrument.swap_long, instrument.swap_short)
    return SymbolTerms(
        symbol=instrument.symbol,
        calc_mode=instrument.calc_mode,
        digits=instrument.digits,
        pip_size=instrument.pip_size,
        contract_size=instrument.contract_size,
        min_lot=pick("min_lot", instrument.min_lot),
        max_lot=pick("max_lot", instrument.max_lot),
        lot_step=instrument.lot_step,
        margin_rate=pick("margin_rate", instrument.margin_rate),
        spread_markup_pips=pick("spread", Decimal(0)),
        stale_threshold_ms=instrument.stale_threshold_ms,
        base_currency=instrument.base_currency,
        quote_currency=instrument.quote_currency,
        profit_currency=instrument.profit_currency,
        tradeability=tradeability,
        tick_size=instrument.tick_size,
        tick_price=instrument.tick_price,
        initial_margin=instrument.initial_margin,
        commission_type=commission[0],
        commission_value=commission[1],
        swap_type=swap[0],
        swap_long=swap[1] if swap[1] is not None else Decimal(0),
        swap_short=swap[2] if swap[2] is not None else Decimal(0),
        swap_triple_day=instrument.swap_triple_day,
    )


def effective_swap(terms: SymbolTerms, group: GroupSettings) -> tuple[Decimal, Decimal]:
    """``(swap_long, swap_short)`` the group charges, in ``terms.swap_type`` units.

    Zero when the group is swap-free (Islamic groups are) or has ``swap_enabled``
    false; otherwise the rates times the group's ``swap_multiplier`` (seed section 16).
    ``swap_free_days`` depends on the account's age and is applied by the swap run.
    """
    if group.swap_free or not group.swap_enabled:
        return Decimal(0), Decimal(0)
    return terms.swap_long * group.swap_multiplier, terms.swap_short * group.swap_multiplier


async def load_terms(session: AsyncSession, group_id: str, symbol: str) -> SymbolTerms | None:
    """The group's terms for ``symbol`` read from the database, or None when the
    symbol is not in the catalog (hot paths use :meth:`TermsCache.terms`)."""
    row = (
        await session.execute(
            select(Instrument, GroupInstrument, Group)
            .outerjoin(
                GroupInstrument,
                (GroupInstrument.symbol == Instrument.symbol)
                & (GroupInstrument.group_id == group_id),
            )
            .outerjoin(Group, Group.id == group_id)
            .where(Instrument.symbol == symbol)
        )
    ).first()
    if row is None:
        return None
    group = GroupSettings.from_row(row[2]) if row[2] is not None else None
    return resolve_terms(row[0], row[1], group)


def terms_to_json(terms: SymbolTerms) -> dict[str, Any]:
    """Snapshot for ``Position.terms`` (decimals as exact strings)."""
    data: dict[str, Any] = {name: getattr(terms, name) for name in SymbolTerms.__dataclass_fields__}
    for name in _DECIMAL_FIELDS:
        data[name] = None if data[name] is None else str(data[name])
    return data


def terms_from_json(data: dict[str, Any]) -> SymbolTerms:
    """The inverse of :func:`terms_to_json`; fields missing from older snapshots take
    their :class:`SymbolTerms` defaults."""
    values = dict(data)
    for name in _DECIMAL_FIELDS:
        if values.get(name) is not None:
            values[name] = Decimal(values[name])
    return SymbolTerms(**values)


def record_config_change(
    session: AsyncSession, *, entity: str, key: str, action: str, at: datetime
) -> None:
    """Stage ``platform.config_changed`` in the caller's unit of work.

    ``entity`` is ``instrument``, ``group``, ``group_instrument`` or ``swap_config``;
    ``key`` the symbol or group id (``<group_id>/<symbol>`` for an override);
    ``action`` ``created``, ``updated`` or ``deleted``.
    """
    record_event(session, CONFIG_CHANGED, {"entity": entity, "key": key, "action": action}, at)


class TermsCache:
    """Instruments, groups and overrides in memory, resolved per (group, symbol).

    :meth:`terms` and :meth:`group` are synchronous dictionary lookups (terms are
    resolved once per pair and memoised until the next load). :meth:`load` replaces
    everything at once; loads are serialised, so the last one to run reflects the
    last committed change. With ``redis`` (several processes) the process that
    handles a ``platform.config_changed`` event publishes on :data:`CONFIG_CHANNEL`
    and every other process reloads; a process that reconnects to that channel
    reloads too, in case it missed a message.
    """

    def __init__(self, db: Database, redis: Redis | None = None) -> None:
        self._db = db
        self._redis = redis
        # Pub/sub ignores the logical database: name it in the channel so processes on
        # different Redis databases (parallel test sessions, tenants) stay apart.
        redis_db = 0 if redis is None else redis.connection_pool.connection_kwargs.get("db", 0)
        self._channel = CONFIG_CHANNEL.format(db=redis_db)
        self._origin = uuid.uuid4().hex
        self._lock = asyncio.Lock()
        self._instruments: dict[str, Instrument] = {}
        self._groups: dict[str, GroupSettings] = {}
        self._overrides: dict[tuple[str, str], GroupInstrument] = {}
        self._resolved: dict[tuple[str | None, str], SymbolTerms] = {}
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False
        #: Incremented by every completed load.
        self.version = 0

    # --- lookups (synchronous) ----------------------------------------------------

    def terms(self, group_id: str, symbol: str) -> SymbolTerms | None:
        """The group's terms for ``symbol``; None for an unknown symbol or group."""
        key: tuple[str | None, str] = (group_id, symbol)
        cached = self._resolved.get(key)
        if cached is None:
            instrument = self._instruments.get(symbol)
            group = self._groups.get(group_id)
            if instrument is None or group is None:
                return None
            cached = resolve_terms(instrument, self._overrides.get((group_id, symbol)), group)
            self._resolved[key] = cached
        return cached

    def instrument(self, symbol: str) -> SymbolTerms | None:
        """The catalog's own terms for ``symbol`` (no group), or None when unknown."""
        key: tuple[str | None, str] = (None, symbol)
        cached = self._resolved.get(key)
        if cached is None:
            instrument = self._instruments.get(symbol)
            if instrument is None:
                return None
            cached = resolve_terms(instrument, None)
            self._resolved[key] = cached
        return cached

    def group(self, group_id: str) -> GroupSettings | None:
        """The group's settings (soft-deleted groups included), or None when unknown."""
        return self._groups.get(group_id)

    # --- loading and refresh ------------------------------------------------------------

    async def load(self) -> None:
        """Read the whole platform configuration and swap it in."""
        async with self._lock:
            async with self._db.read() as session:
                instruments = (await session.scalars(select(Instrument))).all()
                groups = (await session.scalars(select(Group))).all()
                overrides = (await session.scalars(select(GroupInstrument))).all()
            self._instruments = {i.symbol: i for i in instruments}
            self._groups = {g.id: GroupSettings.from_row(g) for g in groups}
            self._overrides = {(o.group_id, o.symbol): o for o in overrides}
            self._resolved = {}
            self.version += 1

    async def on_event(self, event: DomainEvent) -> None:
        """Bus handler: reload on ``platform.config_changed`` and tell the other processes."""
        if event.type != CONFIG_CHANGED:
            return
        await self.load()
        if self._redis is not None:
            await self._redis.publish(self._channel, f"{self._origin} {event.id}")

    async def start(self) -> None:
        """Load, and with Redis subscribe (before returning) to other processes' changes."""
        await self.load()
        if self._redis is not None:
            self._stopping = False
            pubsub = await self._subscribe()
            self._listener = asyncio.create_task(self._listen(pubsub), name="terms-cache-listener")

    async def stop(self) -> None:
        """Let the listener finish its current wait (at most 1 s) and exit."""
        if self._listener is not None:
            self._stopping = True
            await self._listener
            self._listener = None

    async def _subscribe(self) -> PubSub:
        assert self._redis is not None
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self._channel)
        return pubsub

    async def _listen(self, pubsub: PubSub | None) -> None:
        while not self._stopping:
            try:
                if pubsub is None:
                    pubsub = await self._subscribe()
                    await self.load()  # changes announced while disconnected
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and not str(message["data"]).startswith(self._origin):
                    await self.load()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("platform config listener failed; reconnecting in 1 s")
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # the connection is already broken
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                    pubsub = None
                await asyncio.sleep(1)
        if pubsub is not None:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
