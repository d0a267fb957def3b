"""Property: random order/tick sequences keep the books exact.

For any sequence of ticks (crossed ones included), market orders, pending orders and
full or partial closes on one hedging account, in a group with any hedged-margin policy:

* the balance equals the sum of the ledger's balance deltas (and the last row's
  running total), and the ledger's sequence numbers have no gaps;
* the margin used equals the policy's charge computed here independently from the
  open positions' snapshotted margins, in exact fractions (and the sum of the ledger's
  margin deltas): per symbol, ``none`` the sum of both sides, ``larger_side`` the
  larger side, ``rate`` r: the sum minus (1 - r) x min(buy lots, sell lots) x (buy
  margin / buy lots + sell margin / sell lots), each rounded half-up to the cent;
* every position opened and every deal closed was filled at a price that was quoted:
  buys at an ask, sells at a bid, closes on the other side; never at a crossed quote.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from support import DAY_START_MS, deposit, register_trader, tick
from trading_support import (
    create_group,
    history,
    ledger,
    move_account,
    place_pending,
    positions,
    state,
)

from brokerkernel.kernel.runtime import Kernel
from brokerkernel.kernel.storage.models import Position

Client = Any
SYMBOLS = {
    # symbol: (base price, point)
    "EURUSD": (Decimal("1.39290"), Decimal("0.00001")),
    "USDJPY": (Decimal("101.500"), Decimal("0.001")),
}
CLOCK = itertools.count(DAY_START_MS + 60_000, 250)
ACCOUNTS = itertools.count()

ticks = st.tuples(
    st.just("tick"),
    st.sampled_from(sorted(SYMBOLS)),
    st.integers(-400, 400),  # mid offset in points
    st.integers(-5, 40),  # spread in points; negative: a crossed quote
)
orders = st.tuples(
    st.just("order"),
    st.sampled_from(sorted(SYMBOLS)),
    st.sampled_from([0, 1]),
    st.sampled_from(["0.01", "0.1", "0.37", "1", "2.5"]),
)
closes = st.tuples(
    st.just("close"),
    st.integers(0, 5),  # which open position
    st.sampled_from([None, "0.005", "0.05", "0.3"]),  # None: all of it
)
pendings = st.tuples(
    st.just("pending"),
    st.sampled_from(sorted(SYMBOLS)),
    st.sampled_from([2, 3, 4, 5]),
    st.integers(1, 150),  # points away from the market, on the valid side
)
steps = st.lists(st.one_of(ticks, orders, closes, pendings), min_size=1, max_size=30)
policies = st.sampled_from(
    [("none", Decimal(1)), ("larger_side", Decimal(1))]
    + [("rate", Decimal(rate)) for rate in ("0", "0.3", "0.5", "0.77", "1")]
)
CENT = Decimal("0.01")


def expected_margin(mode: str, rate: Decimal, held: Sequence[Position]) -> Decimal:
    """The policy's charge of ``held``, exactly (module docstring)."""
    legs: dict[str, list[Fraction]] = {}  # symbol: [buy lots, buy margin, sell lots, sell margin]
    for position in held:
        leg = legs.setdefault(position.symbol, [Fraction(0)] * 4)
        at = 0 if position.cmd == 0 else 2
        leg[at] += Fraction(position.volume)
        leg[at + 1] += Fraction(position.margin)
    total = Decimal(0)
    for buy_lots, buy_margin, sell_lots, sell_margin in legs.values():
        charge = buy_margin + sell_margin
        if mode == "larger_side":
            charge = max(buy_margin, sell_margin)
        elif mode == "rate" and buy_lots and sell_lots:
            per_lot = buy_margin / buy_lots + sell_margin / sell_lots
            charge -= (1 - Fraction(rate)) * min(buy_lots, sell_lots) * per_lot
        exact = Decimal(charge.numerator) / Decimal(charge.denominator)
        total += exact.quantize(CENT, rounding=ROUND_HALF_UP)
    return total


async def _run(
    client: Client, kernel: Kernel, trader: dict[str, str], login: int, plan: list[Any]
) -> dict[str, set[tuple[Decimal, Decimal]]]:
    quoted: dict[str, set[tuple[Decimal, Decimal]]] = {s: set() for s in SYMBOLS}
    last: dict[str, tuple[Decimal, Decimal]] = {}

    def publish(symbol: str, bid: Decimal, ask: Decimal) -> None:
        if ask >= bid:
            quoted[symbol].add((bid, ask))
            last[symbol] = (bid, ask)
        tick(kernel, symbol, str(bid), str(ask), next(CLOCK))

    for symbol, (base, point) in SYMBOLS.items():
        publish(symbol, base, base + 12 * point)
    for step in plan:
        if step[0] == "tick":
            _, symbol, offset, spread = step
            base, point = SYMBOLS[symbol]
            mid = base + offset * point
            publish(symbol, mid, mid + spread * point)
        elif step[0] == "order":
            _, symbol, cmd, volume = step
            await client.post(
                "/api/customer/orders",
                data=f'{{"login": {login}, "symbol": "{symbol}", "cmd": {cmd}, '
                f'"volume": {volume}}}',
                headers={**trader, "Content-Type": "application/json"},
            )
        elif step[0] == "close":
            _, index, volume = step
            await kernel.trading.idle()
            held = await positions(client, trader, login)
            if held:
                ticket = held[index % len(held)]["ticket"]
                query = f"?login={login}" + (f"&volume={volume}" if volume else "")
                await client.delete(f"/api/crm/orders/{ticket}{query}", headers=trader)
        else:
            _, symbol, cmd, away = step
            bid, ask = last[symbol]
            distance = away * SYMBOLS[symbol][1]
            price = {2: ask - distance, 3: bid + distance, 4: ask + distance, 5: bid - distance}[
                cmd
            ]
            await place_pending(
                client,
                kernel,
                trader,
                login=login,
                symbol=symbol,
                cmd=cmd,
                volume=Decimal("0.1"),
                trigger_price=price,
            )
    await kernel.trading.idle()
    return quoted


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=steps, policy=policies)
async def test_random_sequences_keep_ledger_margin_and_fills_exact(
    client: Client,
    kernel: Kernel,
    staff: dict[str, str],
    plan: list[Any],
    policy: tuple[str, Decimal],
) -> None:
    number = next(ACCOUNTS)
    mode, rate = policy
    group = await create_group(
        client, staff, name=f"prop{number}", hedged_margin_mode=mode, hedged_margin_rate=rate
    )
    login, trader = await register_trader(client, f"prop{number}@test.io")
    await move_account(client, staff, login, group["id"])
    await deposit(client, staff, login, "10000")

    quoted = await _run(client, kernel, trader, login, plan)

    account = await state(client, trader, login)
    events = await ledger(client, staff, login)
    assert [e["sequence_num"] for e in events] == list(range(1, len(events) + 1))
    assert sum((e["balance_delta"] for e in events), Decimal(0)) == account["balance"]
    assert events[-1]["balance_after"] == account["balance"]
    async with kernel.db.read() as session:
        held = (await session.scalars(select(Position).where(Position.login == login))).all()
    assert expected_margin(mode, rate, held) == account["margin_used"]
    assert sum((e["margin_delta"] for e in events), Decimal(0)) == account["margin_used"]
    asks = {s: {ask for _, ask in q} for s, q in quoted.items()}
    bids = {s: {bid for bid, _ in q} for s, q in quoted.items()}
    for position in await positions(client, trader, login):
        side = asks if position["cmd"] == 0 else bids
        assert position["open_price"] in side[position["symbol"]], position
    for deal in await history(client, trader, login):
        opened, closed = (asks, bids) if deal["cmd"] == 0 else (bids, asks)
        assert deal["open_price"] in opened[deal["symbol"]], deal
        assert deal["close_price"] in closed[deal["symbol"]], deal
