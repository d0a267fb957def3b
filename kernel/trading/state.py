"""Account state in memory: the account's money, open positions and pending orders.

The order workers keep an :class:`AccountState` per login and never trust it blindly:
under the account's row lock they compare its ``version`` with the row's
(:mod:`~brokerkernel.kernel.trading.ledger` bumps it on every write) and reload the
account from the database on a mismatch. A unit of work changes a working copy
(:meth:`AccountState.clone`) and the :class:`AccountBook` installs it only after the
commit, so readers only ever see committed state.

Positions and pending orders are immutable values (replaced, never mutated), so a
clone is a shallow copy. Per (instrument terms) the state keeps the open volume and
the volume-weighted open prices of each side (:class:`SideTotals`), which makes
floating profit and exposure O(symbols held), not O(positions); per symbol it also
keeps each side's lots and snapshotted margins
(:class:`~brokerkernel.kernel.trading.margin.SymbolMargins`), from which the group's
hedged-margin policy gives the account's margin used in O(symbols held).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from brokerkernel.kernel.descriptors import SymbolTerms
from brokerkernel.kernel.storage.models import Position, TradingAccount
from brokerkernel.kernel.trading.margin import HedgedMargin, SymbolMargins
from brokerkernel.kernel.trading.models import PendingOrder
from brokerkernel.kernel.trading.terms import terms_from_json, terms_to_json

ZERO = Decimal(0)
#: cmd -> +1 (buys: 0, 2, 4, 6) or -1 (sells: 1, 3, 5, 7)
SIDE = {cmd: 1 if cmd % 2 == 0 else -1 for cmd in range(8)}
CMD_NAMES = {
    0: "buy",
    1: "sell",
    2: "buy limit",
    3: "sell limit",
    4: "buy stop",
    5: "sell stop",
    6: "buy stop limit",
    7: "sell stop limit",
}


@lru_cache(maxsize=4096)
def _terms_json(terms: SymbolTerms) -> dict[str, Any]:
    return terms_to_json(terms)


@dataclass(frozen=True, slots=True)
class OpenPosition:
    """An open position (the seed's "order"): ``cmd`` 0 buy / 1 sell, ``volume`` in
    lots, prices in quote currency, ``margin``/``commission``/``swap`` in account
    currency, ``terms`` the group's instrument terms snapshotted at open."""

    ticket: int
    login: int
    symbol: str
    cmd: int
    volume: Decimal
    open_price: Decimal
    open_time: datetime
    sl: Decimal | None
    tp: Decimal | None
    margin: Decimal
    commission: Decimal
    swap: Decimal
    open_fx_rate: Decimal
    comment: str | None
    terms: SymbolTerms
    last_rollover_at: datetime | None = None

    @property
    def side(self) -> int:
        return SIDE[self.cmd]

    def row(self) -> dict[str, Any]:
        """Column values of the ``positions`` row."""
        return {
            "ticket": self.ticket,
            "login": self.login,
            "symbol": self.symbol,
            "cmd": self.cmd,
            "volume": self.volume,
            "open_price": self.open_price,
            "open_time": self.open_time,
            "sl": self.sl,
            "tp": self.tp,
            "margin": self.margin,
            "commission": self.commission,
            "swap": self.swap,
            "open_fx_rate": self.open_fx_rate,
            "comment": self.comment,
            "terms": _terms_json(self.terms),
            "last_rollover_at": self.last_rollover_at,
        }

    @classmethod
    def from_model(cls, row: Position) -> OpenPosition:
        return cls(
            ticket=row.ticket,
            login=row.login,
            symbol=row.symbol,
            cmd=row.cmd,
            volume=row.volume,
            open_price=row.open_price,
            open_time=row.open_time,
            sl=row.sl,
            tp=row.tp,
            margin=row.margin,
            commission=row.commission,
            swap=row.swap,
            open_fx_rate=row.open_fx_rate,
            comment=row.comment,
            terms=terms_from_json(row.terms),
            last_rollover_at=row.last_rollover_at,
        )


@dataclass(frozen=True, slots=True)
class PendingState:
    """An active pending order (seed section 12); see
    :class:`~brokerkernel.kernel.trading.models.PendingOrder` for the fields."""

    id: int
    login: int
    symbol: str
    cmd: int
    volume: Decimal
    trigger_price: Decimal
    limit_price: Decimal | None
    sl: Decimal | None
    tp: Decimal | None
    expiry_at: datetime | None
    comment: str | None
    status: str
    created_at: datetime
    updated_at: datetime
    reason: str | None = None
    position_ticket: int | None = None
    stop_triggered_at: datetime | None = None

    @property
    def side(self) -> int:
        return SIDE[self.cmd]

    def row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in PENDING_FIELDS}

    @classmethod
    def from_model(cls, row: PendingOrder) -> PendingState:
        return cls(**{name: getattr(row, name) for name in PENDING_FIELDS})


PENDING_FIELDS = tuple(PendingState.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class SideTotals:
    """Open volume (lots) and sum of volume x open price per side, for one terms."""

    long_volume: Decimal = ZERO
    long_cost: Decimal = ZERO
    short_volume: Decimal = ZERO
    short_cost: Decimal = ZERO

    def add(self, side: int, volume: Decimal, price: Decimal) -> SideTotals:
        """These totals with ``volume`` lots at ``price`` added (negative: removed)."""
        if side > 0:
            return SideTotals(
                self.long_volume + volume,
                self.long_cost + volume * price,
                self.short_volume,
                self.short_cost,
            )
        return SideTotals(
            self.long_volume,
            self.long_cost,
            self.short_volume + volume,
            self.short_cost + volume * price,
        )

    @property
    def empty(self) -> bool:
        return not self.long_volume and not self.short_volume


@dataclass(slots=True)
class AccountState:
    """One account as the order workers see it; money in ``currency``.

    ``mode`` is ``hedging`` or ``netting``; ``version`` is the row's version this
    state reflects.
    """

    login: int
    id: str
    group_id: str
    currency: str
    leverage: int
    mode: str
    is_active: bool
    created_at: datetime
    balance: Decimal
    credit: Decimal
    margin: Decimal
    ledger_seq: int
    version: int
    positions: dict[int, OpenPosition] = field(default_factory=dict)
    pending: dict[int, PendingState] = field(default_factory=dict)
    totals: dict[SymbolTerms, SideTotals] = field(default_factory=dict)
    margins: dict[str, SymbolMargins] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        account: TradingAccount,
        positions: list[OpenPosition],
        pending: list[PendingState],
    ) -> AccountState:
        state = cls(
            login=account.login,
            id=account.id,
            group_id=account.group_id,
            currency=account.currency,
            leverage=account.leverage,
            mode=account.account_mode,
            is_active=account.is_active,
            created_at=account.created_at,
            balance=account.balance,
            credit=account.credit,
            margin=account.margin,
            ledger_seq=account.ledger_seq,
            version=account.version,
        )
        for position in positions:
            state.put_position(position)
        state.pending = {order.id: order for order in pending}
        return state

    def clone(self) -> AccountState:
        """A working copy: positions and pending orders are shared immutable values."""
        return AccountState(
            login=self.login,
            id=self.id,
            group_id=self.group_id,
            currency=self.currency,
            leverage=self.leverage,
            mode=self.mode,
            is_active=self.is_active,
            created_at=self.created_at,
            balance=self.balance,
            credit=self.credit,
            margin=self.margin,
            ledger_seq=self.ledger_seq,
            version=self.version,
            positions=dict(self.positions),
            pending=dict(self.pending),
            totals=dict(self.totals),
            margins=dict(self.margins),
        )

    def account_row(self) -> dict[str, Any]:
        """The mutable columns of the ``trading_accounts`` row."""
        return {
            "login": self.login,
            "balance": self.balance,
            "credit": self.credit,
            "margin": self.margin,
            "ledger_seq": self.ledger_seq,
            "version": self.version,
            "account_mode": self.mode,
        }

    # --- positions (keep the side totals in step) ---------------------------------------

    def put_position(self, position: OpenPosition) -> None:
        """Add or replace a position."""
        old = self.positions.get(position.ticket)
        if old is not None:
            self._count(old, -1)
        self.positions[position.ticket] = position
        self._count(position, 1)

    def drop_position(self, ticket: int) -> OpenPosition:
        position = self.positions.pop(ticket)
        self._count(position, -1)
        return position

    def _count(self, position: OpenPosition, sign: int) -> None:
        totals = self.totals.get(position.terms, SideTotals()).add(
            position.side, sign * position.volume, position.open_price
        )
        if totals.empty:
            self.totals.pop(position.terms, None)
        else:
            self.totals[position.terms] = totals
        legs = self.margins.get(position.symbol, SymbolMargins()).add(
            position.side, sign * position.volume, sign * position.margin
        )
        if legs.empty:
            self.margins.pop(position.symbol, None)
        else:
            self.margins[position.symbol] = legs

    def margin_charge(self, policy: HedgedMargin) -> Decimal:
        """The margin used the positions held cost under ``policy`` (account currency,
        rounded per symbol; :mod:`~brokerkernel.kernel.trading.margin`)."""
        return policy.total(self.margins.values(), self.currency)

    def added_margin(
        self, policy: HedgedMargin, symbol: str, side: int, volume: Decimal, margin: Decimal
    ) -> Decimal:
        """How much :meth:`margin_charge` grows when a position of ``volume`` lots with
        ``margin`` opens on ``symbol`` (account currency; 0 or negative when it
        hedges, e.g. under ``larger_side`` a leg no larger than the other side)."""
        legs = self.margins.get(symbol, SymbolMargins())
        after = policy.total([legs.add(side, volume, margin)], self.currency)
        return after - policy.total([legs], self.currency)

    def netting_position(self, symbol: str) -> OpenPosition | None:
        """The netting account's one position on ``symbol``, if any."""
        for position in self.positions.values():
            if position.symbol == symbol:
                return position
        return None


class AccountBook:
    """The committed :class:`AccountState` of every account this process has loaded.

    :meth:`install` keeps the newer of two states (by ``version``), so a reader that
    reloaded an account cannot overwrite a worker's later commit, and vice versa.
    """

    def __init__(self) -> None:
        self._accounts: dict[int, AccountState] = {}

    def get(self, login: int) -> AccountState | None:
        return self._accounts.get(login)

    def install(self, state: AccountState) -> bool:
        """Keep ``state`` unless a newer version is held; True when installed."""
        current = self._accounts.get(state.login)
        if current is not None and current.version > state.version:
            return False
        self._accounts[state.login] = state
        return True

    def forget(self, login: int) -> None:
        self._accounts.pop(login, None)

    def accounts(self) -> list[AccountState]:
        """Every account held (committed state)."""
        return list(self._accounts.values())
