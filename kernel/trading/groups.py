"""Trading groups, per-group instrument overrides, swap config and account group
reassignment (seed sections 6 and 16).

Functions work inside the caller's unit of work (the caller commits, then reloads
:class:`~brokerkernel.kernel.trading.terms.TermsCache`) and record
``platform.config_changed`` with every configuration change. Refusals raise
:class:`~brokerkernel.kernel.trading.service.TradingError` with the HTTP status:
404 unknown group/symbol/account, 409 conflicts (name taken, active accounts
assigned to a group being deleted or changing currency, the default group, inactive
target group, currency mismatch), 422 with
every field error.

Group rules (seed section 16): ``stopout_level`` < ``margin_call_level``;
``is_islamic`` forces ``swap_free``; exactly one active group is the default (making
a group the default takes the flag from the previous one; the flag cannot be
removed, only moved); ``commission_type`` and ``commission_value`` are set together.

Hedged margin (a broker extension to the seed's group fields; DOMAIN.md):
``hedged_margin_mode`` ``larger_side`` (default for new groups) | ``rate`` | ``none``
and ``hedged_margin_rate`` (0..1, for ``rate``) set how a hedging account's opposite
positions are charged (:mod:`~brokerkernel.kernel.trading.margin`). Changing them, or
moving an account to another group, recomputes the margin used of every affected
hedging account holding positions under its row lock, as one ``order_open``
(margin up) or ``margin_release`` (down) ledger row referencing the group.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.events import record_event
from brokerkernel.kernel.storage.models import (
    Group,
    GroupInstrument,
    Instrument,
    Position,
    TradingAccount,
    new_id,
)
from brokerkernel.kernel.trading import ledger
from brokerkernel.kernel.trading.errors import TradingError
from brokerkernel.kernel.trading.instruments import as_decimals, field_error
from brokerkernel.kernel.trading.state import AccountState, OpenPosition
from brokerkernel.kernel.trading.terms import (
    GroupSettings,
    effective_swap,
    record_config_change,
    resolve_terms,
)

#: Commission charged per side: ``per_lot`` in the account currency per lot,
#: ``per_million`` in the account currency per 1,000,000 USD of notional,
#: ``percent`` of the notional.
COMMISSION_TYPES = ("per_lot", "per_million", "percent")
GROUP_TRADEABILITY = ("tradable", "close_only", "non_tradable")

GROUP_DEFAULTS: Mapping[str, Any] = {
    "description": None,
    "currency": "USD",
    "default_leverage": 100,
    "margin_call_level": Decimal(100),
    "stopout_level": Decimal(50),
    "commission_type": None,
    "commission_value": None,
    "swap_free": False,
    "swap_enabled": True,
    "swap_multiplier": Decimal(1),
    "swap_free_days": 0,
    "is_islamic": False,
    "is_default": False,
    "max_exposure": None,
    "net_max_exposure": False,
    "hedged_margin_mode": "larger_side",
    "hedged_margin_rate": Decimal(1),
}
GROUP_DECIMALS = frozenset(
    {
        "margin_call_level",
        "stopout_level",
        "commission_value",
        "swap_multiplier",
        "max_exposure",
        "hedged_margin_rate",
    }
)
HEDGE_FIELDS = ("hedged_margin_mode", "hedged_margin_rate")
HEDGING = "hedging"
#: Fields of ``PUT /groups/{id}/instruments/{symbol}`` (null inherits).
OVERRIDE_FIELDS = (
    "spread",
    "margin_rate",
    "tradeability",
    "commission_type",
    "commission_value",
    "min_lot",
    "max_lot",
)
OVERRIDE_DECIMALS = frozenset({"spread", "margin_rate", "commission_value", "min_lot", "max_lot"})
SWAP_FIELDS = ("swap_type", "swap_long", "swap_short")

NOT_FOUND = "Group not found"
ACCOUNTS_ASSIGNED = "Active accounts assigned; reassign them first"
DEFAULT_NOT_DELETABLE = "The default group cannot be deleted; make another group the default first"


def _commission_pair_error(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    if (values.get("commission_type") is None) != (values.get("commission_value") is None):
        return [
            field_error(
                "commission_value",
                "commission_type and commission_value are set together (both or neither)",
                "commission_pair",
            )
        ]
    return []


def check_group(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rules across fields of a complete group row; returns the 422 items."""
    errors: list[dict[str, Any]] = []
    if values["stopout_level"] >= values["margin_call_level"]:
        errors.append(
            field_error("stopout_level", "must be less than margin_call_level", "level_order")
        )
    errors += _commission_pair_error(values)
    if values["is_default"] and not values.get("is_active", True):
        errors.append(field_error("is_default", "the default group must be active", "default"))
    return errors


async def get_group(session: AsyncSession, group_id: str, *, lock: bool = False) -> Group:
    """The group (soft-deleted ones too); 404 ``Group not found``."""
    query = select(Group).where(Group.id == group_id)
    if lock:
        query = query.with_for_update()
    group = await session.scalar(query)
    if group is None:
        raise TradingError(404, NOT_FOUND)
    return group


async def _instrument(session: AsyncSession, symbol: str) -> Instrument:
    instrument = await session.scalar(select(Instrument).where(Instrument.symbol == symbol))
    if instrument is None:
        raise TradingError(404, f"Instrument {symbol} not found")
    return instrument


async def _name_taken(session: AsyncSession, name: str, group_id: str | None) -> bool:
    query = select(Group.id).where(Group.name == name)
    if group_id is not None:
        query = query.where(Group.id != group_id)
    return await session.scalar(query) is not None


async def _active_accounts(session: AsyncSession, group_id: str) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(TradingAccount)
        .where(TradingAccount.group_id == group_id, TradingAccount.is_active.is_(True))
    )
    return int(count or 0)


async def _take_default(session: AsyncSession, group_id: str) -> None:
    """Remove the default flag from every other group (before flagging ``group_id``)."""
    await session.execute(
        update(Group)
        .where(Group.is_default.is_(True), Group.id != group_id)
        .values(is_default=False)
        .execution_options(synchronize_session=False)
    )


async def _deactivation_refusal(session: AsyncSession, group: Group) -> None:
    if group.is_default:
        raise TradingError(409, DEFAULT_NOT_DELETABLE)
    if await _active_accounts(session, group.id):
        raise TradingError(409, ACCOUNTS_ASSIGNED)


async def create_group(session: AsyncSession, data: Mapping[str, Any], at: datetime) -> Group:
    """Create a group; 409 ``Group name already exists``, 422 rules."""
    values = {**GROUP_DEFAULTS, **as_decimals(data, GROUP_DECIMALS)}
    if values["is_islamic"]:
        values["swap_free"] = True
    errors = check_group(values)
    if errors:
        raise TradingError(422, errors)
    if await _name_taken(session, values["name"], None):
        raise TradingError(409, "Group name already exists")
    group = Group(id=new_id(), is_active=True, created_at=at, **values)
    if group.is_default:
        await _take_default(session, group.id)
    session.add(group)
    record_config_change(session, entity="group", key=group.id, action="created", at=at)
    return group


async def update_group(
    session: AsyncSession, group_id: str, changes: Mapping[str, Any], at: datetime
) -> Group:
    """Change a group's fields (row-locked); the rules apply to the merged result.

    ``is_default: false`` on the default group is refused (422: move the flag instead);
    ``is_active: false`` is a soft delete with :func:`delete_group`'s checks; the
    ``currency`` does not change while active accounts are assigned (409: they hold
    it, as :func:`reassign_account` requires).
    """
    group = await get_group(session, group_id, lock=True)
    current = {name: getattr(group, name) for name in (*GROUP_DEFAULTS, "name", "is_active")}
    values = {**current, **as_decimals(changes, GROUP_DECIMALS)}
    if values["is_islamic"]:
        values["swap_free"] = True
    errors = check_group(values)
    if group.is_default and not values["is_default"]:
        errors.append(
            field_error(
                "is_default",
                "exactly one group is the default; make another group the default instead",
                "default",
            )
        )
    if errors:
        raise TradingError(422, errors)
    if values["name"] != group.name and await _name_taken(session, values["name"], group.id):
        raise TradingError(409, "Group name already exists")
    if group.is_active and not values["is_active"]:
        await _deactivation_refusal(session, group)
    elif values["currency"] != group.currency and await _active_accounts(session, group.id):
        raise TradingError(409, ACCOUNTS_ASSIGNED)
    if values["is_default"] and not group.is_default:
        await _take_default(session, group.id)
    repriced = any(values[name] != getattr(group, name) for name in HEDGE_FIELDS)
    for name, value in values.items():
        if getattr(group, name) != value:
            setattr(group, name, value)
    if repriced:
        await _reprice_group(session, group, at)
    record_config_change(session, entity="group", key=group.id, action="updated", at=at)
    return group


async def reprice_margin(
    session: AsyncSession, account: TradingAccount, group: Group, at: datetime
) -> None:
    """Bring the locked hedging ``account``'s margin used to ``group``'s hedged-margin
    charge of its open positions (:mod:`~brokerkernel.kernel.trading.margin`): one
    ledger row (``order_open`` when it rises, ``margin_release`` when it falls,
    reference the group) when it changes; netting accounts are charged in full and
    never change. The ledger row bumps the account's version, so order workers
    reload its state. A deal the workers execute before their terms cache reloads the
    group is charged under the old policy; every deal sets the margin used to the
    policy's charge of all the account's positions, so the account's next deal
    corrects it."""
    if account.account_mode != HEDGING:
        return
    rows = (await session.scalars(select(Position).where(Position.login == account.login))).all()
    state = AccountState.load(account, [OpenPosition.from_model(row) for row in rows], [])
    delta = state.margin_charge(GroupSettings.from_row(group).hedged_margin) - account.margin
    if not delta:
        return
    ledger.append(
        session,
        account,
        "order_open" if delta > 0 else "margin_release",
        reference_type="group",
        reference_id=group.id,
        idempotency_key=f"hedged_margin:{account.login}:{account.ledger_seq + 1}",
        description=f"Hedged margin {group.hedged_margin_mode} ({group.name})",
        at=at,
        margin_delta=delta,
        source="config-service",
    )


async def _reprice_group(session: AsyncSession, group: Group, at: datetime) -> None:
    """:func:`reprice_margin` for every hedging account of ``group`` holding positions
    (row-locked in login order)."""
    accounts = await session.scalars(
        select(TradingAccount)
        .where(
            TradingAccount.group_id == group.id,
            TradingAccount.account_mode == HEDGING,
            TradingAccount.login.in_(select(Position.login)),
        )
        .order_by(TradingAccount.login)
        .with_for_update()
    )
    for account in accounts.all():
        await reprice_margin(session, account, group, at)


async def delete_group(session: AsyncSession, group_id: str, at: datetime) -> None:
    """Soft delete (``is_active = false``); 409 while active accounts are assigned or
    for the default group. Deleting a deleted group changes nothing."""
    group = await get_group(session, group_id, lock=True)
    if not group.is_active:
        return
    await _deactivation_refusal(session, group)
    group.is_active = False
    record_config_change(session, entity="group", key=group.id, action="deleted", at=at)


async def put_override(
    session: AsyncSession,
    group_id: str,
    symbol: str,
    changes: Mapping[str, Any],
    at: datetime,
) -> tuple[GroupInstrument, bool]:
    """Create or update the group's override of ``symbol``; returns (row, created).

    Fields present in ``changes`` are set (null: inherit from the catalog); absent
    ones keep their value. The effective lot range must stay non-empty and the
    commission pair complete (422).
    """
    await get_group(session, group_id)
    instrument = await _instrument(session, symbol)
    override = await session.scalar(
        select(GroupInstrument)
        .where(GroupInstrument.group_id == group_id, GroupInstrument.symbol == symbol)
        .with_for_update()
    )
    created = override is None
    if override is None:
        override = GroupInstrument(id=new_id(), group_id=group_id, symbol=symbol)
    values = {name: getattr(override, name) for name in OVERRIDE_FIELDS}
    values.update(as_decimals(changes, OVERRIDE_DECIMALS))
    errors = _commission_pair_error(values)
    min_lot = values["min_lot"] if values["min_lot"] is not None else instrument.min_lot
    max_lot = values["max_lot"] if values["max_lot"] is not None else instrument.max_lot
    if min_lot > max_lot:
        errors.append(
            field_error(
                "min_lot",
                f"the group's min_lot {min_lot.normalize():f} exceeds its max_lot "
                f"{max_lot.normalize():f}",
                "lot_range",
            )
        )
    if errors:
        raise TradingError(422, errors)
    for name, value in values.items():
        setattr(override, name, value)
    if created:
        session.add(override)
    record_config_change(
        session,
        entity="group_instrument",
        key=f"{group_id}/{symbol}",
        action="created" if created else "updated",
        at=at,
    )
    return override, created


async def list_overrides(session: AsyncSession, group_id: str) -> list[GroupInstrument]:
    """The group's instrument overrides by symbol; 404 for an unknown group."""
    await get_group(session, group_id)
    rows = await session.scalars(
        select(GroupInstrument)
        .where(GroupInstrument.group_id == group_id)
        .order_by(GroupInstrument.symbol)
    )
    return list(rows.all())


async def put_swap_config(
    session: AsyncSession,
    group_id: str,
    instruments: Mapping[str, Mapping[str, Any] | None],
    at: datetime,
) -> tuple[int, int]:
    """Bulk upsert of the group's swap rates; returns (updated, created) override rows.

    Each entry sets ``swap_type``, ``swap_long`` and ``swap_short`` together; a null
    entry removes the group's rates (the instrument's apply again). Unknown symbols
    are refused together (422) and nothing is written.
    """
    await get_group(session, group_id)
    known = set(
        (
            await session.scalars(
                select(Instrument.symbol).where(Instrument.symbol.in_(list(instruments)))
            )
        ).all()
    )
    unknown = [symbol for symbol in instruments if symbol not in known]
    if unknown:
        raise TradingError(
            422,
            [
                {
                    "loc": ["body", "instruments", symbol],
                    "msg": f"Instrument {symbol} not found",
                    "type": "unknown_symbol",
                }
                for symbol in unknown
            ],
        )
    existing = {
        row.symbol: row
        for row in (
            await session.scalars(
                select(GroupInstrument)
                .where(
                    GroupInstrument.group_id == group_id,
                    GroupInstrument.symbol.in_(list(instruments)),
                )
                .with_for_update()
            )
        ).all()
    }
    updated = created = 0
    for symbol, rates in instruments.items():
        values = as_decimals(rates, frozenset({"swap_long", "swap_short"})) if rates else None
        row = existing.get(symbol)
        if row is None:
            if values is None:
                continue
            row = GroupInstrument(id=new_id(), group_id=group_id, symbol=symbol)
            session.add(row)
            created += 1
        else:
            updated += 1
        for name in SWAP_FIELDS:
            setattr(row, name, None if values is None else values[name])
    record_config_change(session, entity="swap_config", key=group_id, action="updated", at=at)
    return updated, created


async def swap_rates(session: AsyncSession, group_id: str) -> dict[str, Any]:
    """The group's resolved swap rates for every active instrument (seed section 16).

    Per symbol: ``source`` (``group`` when the group's swap config sets the rates,
    else ``instrument``), the rates in ``swap_type`` units, and the
    ``effective_swap_long`` / ``effective_swap_short`` the group charges after
    ``swap_multiplier`` (zero when swap-free, Islamic or ``swap_enabled`` false).
    """
    group = await get_group(session, group_id)
    settings = GroupSettings.from_row(group)
    rows = (
        await session.execute(
            select(Instrument, GroupInstrument)
            .outerjoin(
                GroupInstrument,
                (GroupInstrument.symbol == Instrument.symbol)
                & (GroupInstrument.group_id == group_id),
            )
            .where(Instrument.is_active.is_(True))
            .order_by(Instrument.symbol)
        )
    ).all()
    rates = []
    for instrument, override in rows:
        terms = resolve_terms(instrument, override, settings)
        effective_long, effective_short = effective_swap(terms, settings)
        rates.append(
            {
                "symbol": terms.symbol,
                "source": "group"
                if override is not None and override.swap_type is not None
                else "instrument",
                "swap_type": terms.swap_type,
                "swap_long": terms.swap_long,
                "swap_short": terms.swap_short,
                "effective_swap_long": effective_long,
                "effective_swap_short": effective_short,
                "swap_triple_day": terms.swap_triple_day,
            }
        )
    return {
        "group_id": group.id,
        "group_name": group.name,
        "swap_enabled": settings.swap_enabled,
        "swap_free": settings.swap_free,
        "is_islamic": settings.is_islamic,
        "swap_multiplier": settings.swap_multiplier,
        "swap_free_days": settings.swap_free_days,
        "rates": rates,
    }


async def reassign_account(
    session: AsyncSession, login: int, group_id: str, at: datetime
) -> dict[str, Any]:
    """Move account ``login`` to group ``group_id`` (seed section 6).

    The account row is locked (orders of the account wait) and the target group is
    share-locked against a concurrent soft delete. Open positions keep the terms they
    snapshotted at open; new deals use the new group, and a hedging account's margin
    used becomes the new group's hedged-margin charge (:func:`reprice_margin`).
    Refused: 404 unknown account or
    group, 409 inactive group, 409 group currency different from the account's.
    Records ``account.group_changed``.
    """
    account = await ledger.lock_account(session, login)
    if account is None:
        raise TradingError(404, "Account not found")
    group = await session.scalar(
        select(Group).where(Group.id == group_id).with_for_update(read=True)
    )
    if group is None:
        raise TradingError(404, NOT_FOUND)
    if not group.is_active:
        raise TradingError(409, "Group is not active")
    if group.currency != account.currency:
        raise TradingError(
            409,
            f"Group currency {group.currency} differs from the account currency {account.currency}",
        )
    previous = account.group_id
    if previous != group.id:
        account.group_id = group.id
        await reprice_margin(session, account, group, at)
        record_event(
            session,
            "account.group_changed",
            {"login": login, "from_group_id": previous, "to_group_id": group.id},
            at,
        )
    return {
        "login": login,
        "group_id": group.id,
        "group_name": group.name,
        "previous_group_id": previous,
    }
