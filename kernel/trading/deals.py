"""Market deals on a locked account: open (hedging or netting), close in full or in part.

Opening (seed section 11; group settings section 16):

1. the account must be active, the symbol known to its group, and tradeable
   (``close_only`` lets only deals that reduce a netting position through);
2. volume within ``min_lot``..``max_lot`` and a multiple of ``lot_step``;
3. the execution venue fills at the quote the group sees (B-book: ask for a buy,
   bid for a sell; no fresh quote, no fill);
4. margin (:mod:`~brokerkernel.kernel.trading.margin`), commission (:func:`commission`)
   and the open FX rate are computed at the fill price;
5. the group's ``max_exposure`` (USD; gross, or net per symbol when
   ``net_max_exposure``) refuses deals that would raise exposure above it with
   ``EXPOSURE_LIMIT_EXCEEDED``;
6. the pre-trade risk rules run (e.g. ``margin``: free margin must cover the margin
   the deal adds to the account's margin used, MT5's free-margin check: on a hedging
   account that is the group's hedged-margin charge after the deal minus before it,
   :mod:`~brokerkernel.kernel.trading.margin`, so a hedging leg may need none).

A hedging account gets a new position per deal. A netting account holds one position
per symbol (DOMAIN.md): a deal on the same side adds to it (volume-weighted open
price, margins and commissions added; the deal's SL/TP, when it carries them, become
the position's, as in MT5), an opposite deal closes part or all of it and
a larger one reverses it (the rest opens a new position on the other side).

Closing (section 11): the whole volume, or a multiple of 0.001 leaving >= 0.001 lots; a
partial close becomes its own history row with a new ticket and ``parent_order``, and
margin, commission and swap are split in proportion (rounded to the account
currency; the position keeps the rest, so totals stay exact). Profit is converted
at the close (:class:`~brokerkernel.kernel.trading.valuation.Valuation`).

Positions keep the margin snapshotted at open; the account's margin used is the
group's hedged-margin charge of its positions (:func:`margin_policy`; netting
accounts: the sum of their margins), so every deal's ``order_open`` /
``margin_release`` ledger row moves it by the charge after the deal minus the margin
used before it (closing one leg of a hedge can raise it).

Money rounds half-up to the account currency's minor unit. Commission is charged
per side (on the opening and on the closing deal): ``per_lot`` in the account
currency per lot, ``per_million`` in the account currency per 1,000,000 USD of
notional, ``percent`` of the notional in the account currency.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from brokerkernel.kernel.descriptors import FillRequest, PreTradeCheck, Rejection, SymbolTerms
from brokerkernel.kernel.pricing import ConversionUnavailable, Quote
from brokerkernel.kernel.trading import audit
from brokerkernel.kernel.trading.batch import ShardTransaction, utc
from brokerkernel.kernel.trading.jobs import Env
from brokerkernel.kernel.trading.margin import FULL_MARGIN, HedgedMargin, profit, required_margin
from brokerkernel.kernel.trading.money import round_money
from brokerkernel.kernel.trading.state import CMD_NAMES, SIDE, AccountState, OpenPosition
from brokerkernel.kernel.trading.swaps import settle_swaps
from brokerkernel.kernel.trading.terms import GroupSettings
from brokerkernel.kernel.trading.valuation import Valuation

ZERO = Decimal(0)
MILLION = Decimal(1_000_000)
HUNDRED = Decimal(100)
CLOSE_STEP = Decimal("0.001")
#: Decimal places kept of a netting position's volume-weighted open price.
AVERAGE_PRICE = Decimal("1E-10")
NETTING = "netting"

ACCOUNT_DISABLED = "Account not found or disabled"
UNKNOWN_SYMBOL = "Unknown symbol"
NOT_TRADABLE = "Trading is disabled for this symbol"
CLOSE_ONLY = "Symbol is close-only"
INVALID_VOLUME = "Invalid volume"
EXPOSURE_LIMIT = "EXPOSURE_LIMIT_EXCEEDED"


@dataclass(frozen=True, slots=True)
class Deal:
    """A market deal to execute: ``cmd`` 0 buy / 1 sell, ``volume`` in lots,
    ``sl``/``tp`` prices (None: none) for the position it opens; ``origin`` tags the
    outbox event (``request_id`` of a market order, ``pending:<id>`` of a fill)."""

    symbol: str
    cmd: int
    volume: Decimal
    sl: Decimal | None = None
    tp: Decimal | None = None
    comment: str | None = None
    origin: str | None = None


@dataclass(frozen=True, slots=True)
class ClosePricing:
    """A close at ``price``: ``profit`` and ``commission`` rounded in account currency,
    ``fx_rate`` account currency per unit of profit currency."""

    price: Decimal
    profit: Decimal
    fx_rate: Decimal
    commission: Decimal


def valid_volume(terms: SymbolTerms, volume: Decimal) -> bool:
    """``min_lot`` <= volume <= ``max_lot`` and a positive multiple of ``lot_step``."""
    return volume > 0 and terms.min_lot <= volume <= terms.max_lot and volume % terms.lot_step == 0


def commission(
    env: Env, terms: SymbolTerms, volume: Decimal, price: Decimal, currency: str
) -> Decimal:
    """Commission of one side of a deal in ``currency`` (rounded; module docstring).

    Raises ConversionUnavailable when the notional cannot be converted.
    """
    kind, value = terms.commission_type, terms.commission_value
    if kind is None or not value:
        return ZERO
    if kind == "per_lot":
        return round_money(value * volume, currency)
    quoted = volume * terms.contract_size * price
    if kind == "per_million":
        usd = quoted * env.valuation.rate(terms.quote_currency, "USD")
        return round_money(value * usd / MILLION, currency)
    if kind == "percent":
        amount = env.valuation.to_account(terms, price, currency, cost=True)(
            quoted, terms.quote_currency
        )
        return round_money(amount * value / HUNDRED, currency)
    raise ValueError(f"{terms.symbol}: unknown commission_type {kind!r}")


def price_close(
    env: Env, account: AccountState, position: OpenPosition, volume: Decimal, price: Decimal
) -> ClosePricing:
    """Profit, FX rate and commission of closing ``volume`` lots at ``price``.

    Raises ConversionUnavailable when no rate converts the profit currency.
    """
    amount = profit(position.terms, position.side, volume, position.open_price, price)
    rate = env.valuation.profit_rate(position.terms, price, account.currency, amount >= 0)
    fee = commission(env, position.terms, volume, price, account.currency)
    return ClosePricing(price, round_money(amount * rate, account.currency), rate, fee)


def margin_policy(env: Env, account: AccountState) -> HedgedMargin:
    """The hedged-margin policy charging the account: its group's for a hedging
    account, every position in full for a netting one (or an unknown group)."""
    group = env.terms.group(account.group_id)
    if account.mode == NETTING or group is None:
        return FULL_MARGIN
    return group.hedged_margin


def _margin_change(account: AccountState, policy: HedgedMargin) -> Decimal:
    """The ledger margin delta bringing the account's margin used to ``policy``'s
    charge of the positions now held (staged)."""
    return account.margin_charge(policy) - account.margin


def close_volume_error(position: OpenPosition, volume: Decimal) -> str | None:
    """Why ``volume`` cannot be closed (seed section 11), or None: the whole volume
    always closes (whatever the instrument's ``lot_step``); a partial close is a
    positive multiple of 0.001 leaving at least 0.001 lots open."""
    if volume == position.volume:
        return None
    if volume <= 0 or volume % CLOSE_STEP != 0 or volume > position.volume:
        return "volume must be a positive multiple of 0.001 not above the position's"
    if position.volume - volume < CLOSE_STEP:
        return "volume must leave 0 or at least 0.001 lots open"
    return None


async def stage_close(
    env: Env,
    tx: ShardTransaction,
    account: AccountState,
    position: OpenPosition,
    volume: Decimal,
    pricing: ClosePricing,
    reason: str,
    *,
    source: str = audit.ORDER_SERVICE,
    action: str | None = None,
) -> dict[str, Any]:
    """Close ``volume`` lots (validated) of ``position``; returns the history row.

    ``reason`` is the history reason: manual, sl, tp or stop-out. Swaps of rollovers
    the position was open over are charged first. The history row's ``margin`` is the
    position's share of its snapshotted margin; the ``margin_release`` ledger row moves
    the account's margin used to the hedged-margin charge of what stays open.
    """
    position = settle_swaps(env, tx, account, position)
    currency = account.currency
    before = audit.snapshot(account)
    remainder = position.volume - volume
    if remainder == 0:
        released, open_fee, swap = position.margin, position.commission, position.swap
        ticket, parent = position.ticket, None
        tx.drop_position(account, position.ticket)
    else:
        share = volume / position.volume
        released = round_money(position.margin * share, currency)
        open_fee = round_money(position.commission * share, currency)
        swap = round_money(position.swap * share, currency)
        tx.put_position(
            account,
            replace(
                position,
                volume=remainder,
                margin=position.margin - released,
                commission=position.commission - open_fee,
                swap=position.swap - swap,
            ),
            new=False,
        )
        ticket, parent = await tx.ticket(), position.ticket
    deal = {
        "ticket": ticket,
        "login": account.login,
        "symbol": position.symbol,
        "cmd": position.cmd,
        "volume": volume,
        "open_price": position.open_price,
        "open_time": position.open_time,
        "close_price": pricing.price,
        "close_time": tx.now,
        "profit": pricing.profit,
        "commission": open_fee + pricing.commission,
        "swap": swap,
        "margin": released,
        "open_fx_rate": position.open_fx_rate,
        "close_fx_rate": pricing.fx_rate,
        "reason": reason,
        "parent_order": parent,
    }
    tx.history.append(deal)
    label = f"#{position.ticket} {volume} {position.symbol} @ {pricing.price}"
    tx.ledger_entry(
        account,
        "margin_release",
        reference_type="order",
        reference_id=str(ticket),
        description=f"Margin released, close {label}",
        margin_delta=_margin_change(account, margin_policy(env, account)),
    )
    tx.ledger_entry(
        account,
        "trade_pnl",
        reference_type="order",
        reference_id=str(ticket),
        description=f"Profit, close {label}",
        balance_delta=pricing.profit,
    )
    _charge_commission(tx, account, ticket, f"close:{ticket}", f"close {label}", pricing.commission)
    tx.audit_row(
        account,
        before,
        entity_type="order",
        entity_id=str(position.ticket),
        action=action or ("close" if remainder == 0 else "partial_close"),
        details={
            "symbol": position.symbol,
            "cmd": position.cmd,
            "volume": str(volume),
            "price": str(pricing.price),
            "profit": str(pricing.profit),
            "commission": str(pricing.commission),
            "reason": reason,
            "deal": ticket,
            "remaining_volume": str(remainder),
        },
        source=source,
    )
    tx.event(
        "order.closed",
        {
            "login": account.login,
            "ticket": position.ticket,
            "deal": ticket,
            "symbol": position.symbol,
            "volume": str(volume),
            "price": str(pricing.price),
            "profit": str(pricing.profit),
            "reason": reason,
            "remaining_volume": str(remainder),
        },
    )
    return deal


def _terms_and_group(
    env: Env, account: AccountState, symbol: str
) -> tuple[SymbolTerms, GroupSettings] | None:
    terms = env.terms.terms(account.group_id, symbol)
    group = env.terms.group(account.group_id)
    if terms is None or group is None:
        return None
    return terms, group


async def open_deal(
    env: Env,
    tx: ShardTransaction,
    account: AccountState | None,
    deal: Deal,
    quote: Quote | None = None,
) -> int | Rejection:
    """Execute ``deal`` on the account; returns the ticket of the position it opened
    or changed, or the Rejection (nothing staged). ``quote`` overrides the latest
    group quote (a trigger's tick)."""
    if account is None or not account.is_active:
        return Rejection(ACCOUNT_DISABLED)
    resolved = _terms_and_group(env, account, deal.symbol)
    if resolved is None:
        return Rejection(UNKNOWN_SYMBOL)
    terms, group = resolved
    side = SIDE[deal.cmd]
    held = account.netting_position(deal.symbol) if account.mode == NETTING else None
    closing = min(held.volume, deal.volume) if held is not None and held.side != side else ZERO
    opening = deal.volume - closing
    if terms.tradeability == "non_tradable":
        return Rejection(NOT_TRADABLE)
    if terms.tradeability == "close_only" and opening:
        return Rejection(CLOSE_ONLY)
    if not valid_volume(terms, deal.volume):
        return Rejection(INVALID_VOLUME)
    fill = await env.venue.execute(
        FillRequest(
            account.login,
            side,
            deal.volume,
            quote if quote is not None else env.valuation.quote_for(terms),
            terms,
            tx.now_ms,
        )
    )
    if isinstance(fill, Rejection):
        return fill
    price = fill.price
    currency = account.currency
    try:
        close_pricing = (
            price_close(env, account, held, closing, price)
            if held is not None and closing
            else None
        )
        margin = round_money(
            required_margin(
                terms,
                opening,
                price,
                account.leverage,
                env.valuation.to_account(terms, price, currency, cost=True),
            ),
            currency,
        )
        open_fx_rate = env.valuation.profit_rate(terms, price, currency)
        fee = commission(env, terms, opening, price, currency)
    except ConversionUnavailable as exc:
        return Rejection(f"No conversion rate: {exc}")
    if held is not None and closing:
        rejection = vet_close(env, account, held, closing, price, tx.now_ms, deal.origin)
        if rejection is not None:
            return rejection
    policy = margin_policy(env, account)
    if opening:
        reversing = held is not None and close_pricing is not None
        rejection = pre_trade(
            env,
            account,
            group,
            terms,
            side,
            opening,
            price,
            account.added_margin(policy, terms.symbol, side, opening, margin),
            released=held if reversing else None,
            deal=deal,
            time_ms=tx.now_ms,
        )
        if rejection is not None:
            return rejection
    if held is not None and close_pricing is not None:
        await stage_close(env, tx, account, held, closing, close_pricing, "manual")
        if not opening:
            return held.ticket
    if held is not None and held.side == side:
        held = settle_swaps(env, tx, account, held)
        return _add_to_netting(
            tx, account, policy, held, deal, opening, price, margin, fee, await tx.ticket()
        )
    return _open_position(
        tx,
        account,
        policy,
        terms,
        deal,
        opening,
        price,
        utc(fill.time_ms),
        margin,
        fee,
        open_fx_rate,
        await tx.ticket(),
    )


def pre_trade(
    env: Env,
    account: AccountState,
    group: GroupSettings,
    terms: SymbolTerms,
    side: int,
    volume: Decimal,
    price: Decimal,
    margin: Decimal,
    released: OpenPosition | None = None,
    deal: Deal | None = None,
    time_ms: int = 0,
) -> Rejection | None:
    """The exposure limit and the pre-trade rules for opening ``volume`` lots that add
    ``margin`` to the account's margin used (:meth:`AccountState.added_margin`);
    ``released`` is a netting position the same deal closes first; ``deal`` (its
    SL/TP) and ``time_ms`` (market time) are passed on to the rules."""
    if group.max_exposure is not None:
        legs = [(terms, side, volume)]
        if released is not None:
            legs.append((released.terms, released.side, -released.volume))
        before = env.valuation.exposure(account)
        after = env.valuation.exposure(account, legs)
        index = 1 if group.net_max_exposure else 0
        if after[index] > group.max_exposure and after[index] > before[index]:
            return Rejection(EXPOSURE_LIMIT)
    check = PreTradeCheck(
        login=account.login,
        group=group.name,
        currency=account.currency,
        leverage=account.leverage,
        balance=account.balance,
        credit=account.credit,
        equity=env.valuation.equity(account),
        margin_used=account.margin - (released.margin if released is not None else ZERO),
        symbol=terms.symbol,
        side=side,
        volume=volume,
        price=price,
        required_margin=margin,
        open_positions=len(account.positions) - (1 if released is not None else 0),
        sl=None if deal is None else deal.sl,
        tp=None if deal is None else deal.tp,
        time_ms=time_ms,
        notional_usd=notional_usd(env.valuation, terms, volume, price),
        origin=None if deal is None else deal.origin,
    )
    for _name, rule in env.rules:
        rejection = rule.check(check)
        if rejection is not None:
            return rejection
    return None


def vet_close(
    env: Env,
    account: AccountState,
    position: OpenPosition,
    volume: Decimal,
    price: Decimal,
    time_ms: int,
    origin: str | None = None,
) -> Rejection | None:
    """The pre-trade rules with ``checks_closes`` on the trader closing ``volume`` lots
    of ``position`` at ``price`` (a :class:`PreTradeCheck` with ``closing=True``)."""
    rules = [rule for _name, rule in env.rules if getattr(rule, "checks_closes", False)]
    if not rules:
        return None
    group = env.terms.group(account.group_id)
    terms = position.terms
    check = PreTradeCheck(
        login=account.login,
        group="" if group is None else group.name,
        currency=account.currency,
        leverage=account.leverage,
        balance=account.balance,
        credit=account.credit,
        equity=env.valuation.equity(account),
        margin_used=account.margin,
        symbol=terms.symbol,
        side=-position.side,
        volume=volume,
        price=price,
        required_margin=ZERO,
        open_positions=len(account.positions),
        time_ms=time_ms,
        notional_usd=notional_usd(env.valuation, terms, volume, price),
        origin=origin,
        closing=True,
    )
    for rule in rules:
        rejection = rule.check(check)
        if rejection is not None:
            return rejection
    return None


def notional_usd(
    valuation: Valuation, terms: SymbolTerms, volume: Decimal, price: Decimal
) -> Decimal | None:
    """Notional of ``volume`` lots at ``price`` in USD (None without a USD rate)."""
    try:
        return volume * terms.contract_size * price * valuation.rate(terms.quote_currency, "USD")
    except ConversionUnavailable:
        return None


def _open_position(
    tx: ShardTransaction,
    account: AccountState,
    policy: HedgedMargin,
    terms: SymbolTerms,
    deal: Deal,
    volume: Decimal,
    price: Decimal,
    opened_at: Any,
    margin: Decimal,
    fee: Decimal,
    open_fx_rate: Decimal,
    ticket: int,
) -> int:
    before = audit.snapshot(account)
    position = OpenPosition(
        ticket=ticket,
        login=account.login,
        symbol=terms.symbol,
        cmd=deal.cmd,
        volume=volume,
        open_price=price,
        open_time=opened_at,
        sl=deal.sl,
        tp=deal.tp,
        margin=margin,
        commission=fee,
        swap=ZERO,
        open_fx_rate=open_fx_rate,
        comment=deal.comment,
        terms=terms,
    )
    tx.put_position(account, position, new=True)
    label = f"#{ticket} {CMD_NAMES[deal.cmd]} {volume} {terms.symbol} @ {price}"
    tx.ledger_entry(
        account,
        "order_open",
        reference_type="order",
        reference_id=str(ticket),
        description=f"Open {label}",
        margin_delta=_margin_change(account, policy),
    )
    _charge_commission(tx, account, ticket, f"open:{ticket}", f"open {label}", fee)
    _opened(tx, account, before, ticket, deal, volume, price, margin, fee, "open")
    return ticket


def _add_to_netting(
    tx: ShardTransaction,
    account: AccountState,
    policy: HedgedMargin,
    held: OpenPosition,
    deal: Deal,
    volume: Decimal,
    price: Decimal,
    margin: Decimal,
    fee: Decimal,
    deal_ticket: int,
) -> int:
    before = audit.snapshot(account)
    total = held.volume + volume
    average = ((held.open_price * held.volume + price * volume) / total).quantize(AVERAGE_PRICE)
    tx.put_position(
        account,
        replace(
            held,
            volume=total,
            open_price=average,
            margin=held.margin + margin,
            commission=held.commission + fee,
            sl=held.sl if deal.sl is None else deal.sl,
            tp=held.tp if deal.tp is None else deal.tp,
        ),
        new=False,
    )
    label = f"#{held.ticket} +{volume} {held.symbol} @ {price}"
    tx.ledger_entry(
        account,
        "order_open",
        reference_type="order",
        reference_id=str(held.ticket),
        idempotency_key=f"order_open:{deal_ticket}",
        description=f"Add {label}",
        margin_delta=_margin_change(account, policy),
    )
    _charge_commission(tx, account, held.ticket, f"open:{deal_ticket}", f"add {label}", fee)
    _opened(tx, account, before, held.ticket, deal, volume, price, margin, fee, "increase")
    return held.ticket


def _charge_commission(
    tx: ShardTransaction,
    account: AccountState,
    ticket: int,
    key: str,
    what: str,
    fee: Decimal,
) -> None:
    """Post a deal's commission (account currency, > 0) as a ``commission`` ledger row;
    nothing when the deal carries none. ``key`` makes the row idempotent per deal side."""
    if fee:
        tx.ledger_entry(
            account,
            "commission",
            reference_type="order",
            reference_id=str(ticket),
            idempotency_key=f"commission:{key}",
            description=f"Commission, {what}",
            balance_delta=-fee,
        )


def _opened(
    tx: ShardTransaction,
    account: AccountState,
    before: audit.Snapshot,
    ticket: int,
    deal: Deal,
    volume: Decimal,
    price: Decimal,
    margin: Decimal,
    fee: Decimal,
    action: str,
) -> None:
    details = {
        "symbol": deal.symbol,
        "cmd": deal.cmd,
        "volume": str(volume),
        "price": str(price),
        "margin": str(margin),
        "commission": str(fee),
    }
    tx.audit_row(
        account, before, entity_type="order", entity_id=str(ticket), action=action, details=details
    )
    tx.event(
        "order.opened",
        {"login": account.login, "ticket": ticket, **details, "request_id": deal.origin},
    )
