"""Profit-currency → account-currency conversion rates, kept as a small float vector.

Every conversion the risk engine needs (e.g. JPY → USD for a USD account holding
EURJPY) is one entry of :attr:`ConversionRates.values`; books of positions refer to
entries by index, and a tick of a pair that an entry is built from updates that entry
(a USDJPY tick moves JPY → USD). Entry ``0`` is the constant 1.0 (profit currency ==
account currency).

Pairs are found the way :class:`brokerkernel.kernel.pricing.FxConverter` finds them,
by name among the symbols quoted so far: the direct pair ``SOURCETARGET`` (multiply),
the inverse ``TARGETSOURCE`` (divide), else through USD (``SOURCEUSD``/``USDSOURCE``
then ``USDTARGET``/``TARGETUSD``), else along the shortest chain of quoted six-letter
pairs (e.g. GBP → JPY via ``EURGBP`` and ``EURJPY``). A conversion with no quoted path
is 0.0, so the
positions it converts count no floating P&L until a path quotes (the Decimal path
also skips a position it cannot convert). When a symbol quotes for the first time
every entry is resolved again, since a shorter path may now exist.

Sides (``fx_conversion``, the kernel's ``[kernel] fx_conversion``): ``"mid"`` converts
at the mid; ``"bid_ask"`` at the side less favourable to the account (DOMAIN.md: bid
for profit, ask for loss): a profit is converted at the lower rate (bid of a direct
pair, 1/ask of an inverse one) and a loss at the higher rate (ask, 1/bid).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Final, Literal

from brokerkernel.kernel.pricing import currency_chain

FxConversion = Literal["mid", "bid_ask"]
FX_CONVERSIONS: Final = ("mid", "bid_ask")

UNIT: Final = 0
"""Index of the constant rate 1.0."""

Leg = tuple[str, str, int]
"""``(pair symbol, price field "bid" | "ask" | "mid", exponent +1 | -1)``."""


class ConversionRates:
    """The conversion rates the engine marks positions with (float, engine-internal).

    ``values[i]`` is units of the target (account) currency per unit of the source
    (profit) currency. Not thread-safe: one writer, like the engine that owns it.
    Raises ``ValueError`` for an unknown ``fx_conversion``.
    """

    def __init__(self, fx_conversion: FxConversion = "mid") -> None:
        if fx_conversion not in FX_CONVERSIONS:
            raise ValueError(
                f"fx_conversion must be one of {FX_CONVERSIONS}, got {fx_conversion!r}"
            )
        self._sided = fx_conversion == "bid_ask"
        self.values: list[float] = [1.0]
        self._keys: list[tuple[str, str, bool]] = [("", "", False)]
        self._legs: list[tuple[Leg, ...] | None] = [()]
        self._index: dict[tuple[str, str, bool], int] = {}
        self._quotes: dict[str, tuple[float, float]] = {}
        self._users: dict[str, list[int]] = {}

    def index(self, source: str, target: str, for_loss: bool = False) -> int:
        """The entry converting ``source`` to ``target`` (created on first use).

        ``for_loss`` picks the loss side under ``"bid_ask"``; under ``"mid"`` profit and
        loss share one entry.
        """
        if source == target:
            return UNIT
        key = (source, target, for_loss and self._sided)
        found = self._index.get(key)
        if found is not None:
            return found
        entry = len(self.values)
        legs = self._resolve(*key)
        self._index[key] = entry
        self._keys.append(key)
        self._legs.append(legs)
        self.values.append(self._value(legs))
        self._link(entry, legs)
        return entry

    def on_quote(self, symbol: str, bid: float, ask: float) -> Sequence[int]:
        """Record a tick; returns the entries whose value changed."""
        first = symbol not in self._quotes
        self._quotes[symbol] = (bid, ask)
        if first:
            return self._resolve_all()
        users = self._users.get(symbol)
        if not users:
            return ()
        values = self.values
        changed = []
        for entry in users:
            value = self._value(self._legs[entry])
            if value != values[entry]:
                values[entry] = value
                changed.append(entry)
        return changed

    # --- internals ---------------------------------------------------------------------

    def _resolve_all(self) -> list[int]:
        self._users = {}
        changed = []
        for entry in range(1, len(self.values)):
            legs = self._resolve(*self._keys[entry])
            self._legs[entry] = legs
            self._link(entry, legs)
            value = self._value(legs)
            if value != self.values[entry]:
                self.values[entry] = value
                changed.append(entry)
        return changed

    def _link(self, entry: int, legs: tuple[Leg, ...] | None) -> None:
        for symbol, _field, _exponent in legs or ():
            self._users.setdefault(symbol, []).append(entry)

    def _resolve(self, source: str, target: str, for_loss: bool) -> tuple[Leg, ...] | None:
        direct = self._leg(source, target, for_loss)
        if direct is not None:
            return (direct,)
        if "USD" not in (source, target):
            to_usd = self._leg(source, "USD", for_loss)
            from_usd = self._leg("USD", target, for_loss)
            if to_usd is not None and from_usd is not None:
                return (to_usd, from_usd)
        # a loss converts at 1 / rate(target -> source), so its chain is searched that way
        if for_loss:
            back = currency_chain(self._quotes, target, source)
            path = None if back is None else back[::-1]
        else:
            path = currency_chain(self._quotes, source, target)
        if path is None:
            return None
        legs = []
        for step_from, step_to in pairwise(path):
            leg = self._leg(step_from, step_to, for_loss)
            assert leg is not None  # every link of a chain is a quoted pair
            legs.append(leg)
        return tuple(legs)

    def _leg(self, source: str, target: str, for_loss: bool) -> Leg | None:
        if source + target in self._quotes:
            field = "bid" if not for_loss else "ask"
            return (source + target, field if self._sided else "mid", 1)
        if target + source in self._quotes:
            field = "ask" if not for_loss else "bid"
            return (target + source, field if self._sided else "mid", -1)
        return None

    def _value(self, legs: tuple[Leg, ...] | None) -> float:
        if legs is None:
            return 0.0
        value = 1.0
        for symbol, field, exponent in legs:
            bid, ask = self._quotes[symbol]
            price = bid if field == "bid" else ask if field == "ask" else (bid + ask) / 2
            if not price > 0:
                return 0.0
            value = value * price if exponent > 0 else value / price
        return value
