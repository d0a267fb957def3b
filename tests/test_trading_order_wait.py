"""Market orders whose answer waits for the outcome: ``wait_ms`` on the POST (one
request per order) and on the poll (long poll)."""

from __future__ import annotations

from typing import Any

from support import deposit, register_trader
from trading_support import positions

from brokerkernel.kernel.runtime import Kernel

Client = Any


async def _order(
    client: Client, trader: dict[str, str], login: int, volume: str, wait_ms: int | str
) -> tuple[int, dict[str, Any]]:
    response = await client.post(
        f"/api/customer/orders?wait_ms={wait_ms}",
        data=f'{{"login": {login}, "symbol": "EURUSD", "cmd": 0, "volume": {volume}}}',
        headers={**trader, "Content-Type": "application/json"},
    )
    return response.status, await response.json()


async def _poll(
    client: Client, trader: dict[str, str], request_id: str, wait_ms: int = 0
) -> dict[str, Any]:
    response = await client.get(
        f"/api/customer/orders/request/{request_id}?wait_ms={wait_ms}", headers=trader
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def test_a_post_with_wait_ms_answers_the_outcome_and_stores_it_for_polls(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "waits@test.io")
    await deposit(client, staff, login, "10000")

    status, executed = await _order(client, trader, login, "0.01", 5000)
    _, rejected = await _order(client, trader, login, "0.015", 5000)

    assert status == 200, executed
    (position,) = await positions(client, trader, login)
    assert executed == {
        "request_id": executed["request_id"],
        "status": "executed",
        "order": position["ticket"],
    }
    assert rejected == {
        "request_id": rejected["request_id"],
        "status": "rejected",
        "reason": "Invalid volume",
    }
    assert await _poll(client, trader, executed["request_id"]) == executed
    assert await _poll(client, trader, rejected["request_id"]) == rejected


async def test_a_wait_that_runs_out_answers_queued_and_the_long_poll_gets_the_outcome(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "slow@test.io")
    await deposit(client, staff, login, "10000")
    workers = kernel.trading.workers
    await workers.stop()  # the order stays queued until the workers run again

    _, queued = await _order(client, trader, login, "0.01", 20)
    still = await _poll(client, trader, queued["request_id"])
    await workers.start()
    done = await _poll(client, trader, queued["request_id"], wait_ms=5000)

    (position,) = await positions(client, trader, login)
    assert queued == {"request_id": queued["request_id"], "status": "queued"}
    assert still == queued
    assert done == {
        "request_id": queued["request_id"],
        "status": "executed",
        "order": position["ticket"],
    }


async def test_wait_ms_out_of_range_is_refused_and_nothing_is_queued(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "range@test.io")
    await deposit(client, staff, login, "10000")

    refused = [await _order(client, trader, login, "0.01", wait) for wait in (10001, -1, "x")]

    await kernel.trading.idle()
    assert [status for status, _ in refused] == [422] * 3
    assert [body["detail"][0]["loc"] for _, body in refused] == [["query", "wait_ms"]] * 3
    assert refused[0][1]["detail"][0]["msg"] == "must be between 0 and 10000"
    assert await positions(client, trader, login) == []
