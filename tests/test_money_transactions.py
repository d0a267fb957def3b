"""Transactions through the back-office API (seed section 8): create, approve, decline,
delete, chargeback, maker-checker, the free-margin guard, withdrawal approval rules
(section 10) and bad input."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from money_support import (
    act,
    balance,
    compliance_status,
    ledger_rows,
    set_maker_checker,
    staff_as,
    transaction,
    transactions_of,
)
from support import DAY_START_MS, deposit, market_order, register_trader, tick

from brokerkernel.api.jsonio import loads
from brokerkernel.kernel.money.transactions import TransactionService
from brokerkernel.kernel.runtime import Kernel

Client = Any


async def test_pending_moves_nothing_until_approved_then_exactly_once(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "pending@test.io")
    manager = await staff_as(client, kernel, "manager@broker.test", "manager")

    created = await transaction(client, staff, login, "DEPOSIT", "500.00")
    assert (created["status"], created["amount"], created["account_amount"]) == (
        "PENDING",
        500,
        500,
    )
    assert (created["source"], created["usd_amount"], created["exchange_rate_usd"]) == (
        "manual",
        500,
        1,
    )
    assert await balance(kernel, login) == (0, 0)
    assert await ledger_rows(kernel, login) == []

    approved = await act(client, manager, created["id"], "approve")
    again = await act(client, manager, created["id"], "approve", expect=409)

    assert approved["status"] == "APPROVED" and approved["approved_by"] != created["created_by"]
    assert again == {"detail": "Transaction is APPROVED: only an open transaction can be approved"}
    assert await balance(kernel, login) == (Decimal("500.00"), 0)
    rows = await ledger_rows(kernel, login)
    assert [(r.event_type, r.balance_delta, r.balance_after, r.sequence_num) for r in rows] == [
        ("deposit", 500, 500, 1)
    ]
    assert rows[0].idempotency_key == f"deposit:{created['id']}"
    assert rows[0].reference_id == created["id"]


async def test_signed_amounts_and_ledger_types_per_transaction_type(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "types@test.io")
    cases = [
        ("DEPOSIT", "1000", "deposit", 1000, 0),
        ("BONUS", "50", "correction_in", 50, 0),
        ("CREDIT_IN", "200", "credit_in", 0, 200),
        ("BONUS_CREDIT_IN", "20", "credit_in", 0, 20),
        ("CREDIT_OUT", "30", "credit_out", 0, -30),
        ("WITHDRAWAL", "100", "withdrawal", -100, 0),
        ("TRANSFER_OUT", "10", "correction_out", -10, 0),
        ("IB_PAYMENT", "5.55", "correction_in", Decimal("5.55"), 0),
        ("CORRECTION_OUT", "0.55", "correction_out", Decimal("-0.55"), 0),
    ]
    for type_, amount, *_ in cases:
        await transaction(client, staff, login, type_, amount, status="APPROVED")

    rows = await ledger_rows(kernel, login)
    assert [(r.event_type, r.balance_delta, r.credit_delta) for r in rows] == [
        (event_type, b, c) for _, _, event_type, b, c in cases
    ]
    txs = {t.id: t for t in await transactions_of(kernel, login)}
    assert [(txs[r.reference_id].type, txs[r.reference_id].amount) for r in rows] == [
        (type_, b + c) for type_, _, _, b, c in cases
    ]
    assert await balance(kernel, login) == (Decimal("945.00"), Decimal("190"))
    response = await client.get(f"/api/crm/accounts/{login}/balance", headers=staff)
    body = await response.json(loads=loads)
    assert (body["balance"], body["credit"], body["currency"]) == (945, 190, "USD")
    assert (body["account_balance"], body["account_credit"]) == (945, 190)
    by_uuid = await client.get(f"/api/crm/accounts/{body['account_id']}/balance", headers=staff)
    assert await by_uuid.json(loads=loads) == body
    assert body["login"] == login


async def test_decline_and_state_transitions(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "states@test.io")
    tx = await transaction(client, staff, login, "DEPOSIT", "100")
    response = await client.patch(
        f"/api/backoffice/transactions/{tx['id']}/decline",
        json={"reason": "Wire not received"},
        headers=staff,
    )
    declined = await response.json(loads=loads)

    assert (declined["status"], declined["reason"]) == ("DECLINE", "Wire not received")
    assert await act(client, staff, tx["id"], "approve", expect=409) == {
        "detail": "Transaction is DECLINE: only an open transaction can be approved"
    }
    assert await act(client, staff, tx["id"], "decline", expect=409) == {
        "detail": "Transaction is DECLINE: only an open transaction can be declined"
    }
    deleted = await act(client, staff, tx["id"], "delete")
    assert deleted["status"] == "DELETED"
    assert await act(client, staff, tx["id"], "delete", expect=409) == {
        "detail": "Transaction is already DELETED"
    }
    assert await act(client, staff, "7a1c0e52-4d0b-4f7e-9a10-00000000dead", "approve", 404) == {
        "detail": "Transaction not found"
    }
    assert await act(client, staff, "not-a-uuid", "approve", expect=422) == {
        "detail": [{"loc": ["path", "id"], "msg": "must be a UUID", "type": "format"}]
    }
    assert await ledger_rows(kernel, login) == []


async def test_soft_delete_of_an_approved_transaction_reverses_it_and_keeps_the_row(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "delete@test.io")
    first = await transaction(client, staff, login, "DEPOSIT", "300", status="APPROVED")
    await transaction(client, staff, login, "CREDIT_IN", "40", status="APPROVED")
    (credit,) = [t for t in await transactions_of(kernel, login) if t.type == "CREDIT_IN"]

    await act(client, staff, first["id"], "delete")
    await act(client, staff, credit.id, "delete")

    rows = await ledger_rows(kernel, login)
    assert [(r.event_type, r.balance_delta, r.credit_delta, r.idempotency_key) for r in rows] == [
        ("deposit", 300, 0, f"deposit:{first['id']}"),
        ("credit_in", 0, 40, f"credit_in:{credit.id}"),
        ("correction_out", -300, 0, f"reversal:{first['id']}"),
        ("credit_out", 0, -40, f"reversal:{credit.id}"),
    ]
    assert await balance(kernel, login) == (0, 0)
    assert [t.status for t in await transactions_of(kernel, login)] == ["DELETED", "DELETED"]
    response = await client.get(f"/api/crm/accounts/{login}/balance", headers=staff)
    assert (await response.json(loads=loads))["balance"] == 0


async def test_maker_checker_refuses_the_creator_also_in_one_step(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "maker@test.io")
    manager = await staff_as(client, kernel, "checker@broker.test", "manager")
    tx = await transaction(client, staff, login, "DEPOSIT", "100")
    await set_maker_checker(kernel, True)

    refused = await act(client, staff, tx["id"], "approve", expect=403)
    one_step = await transaction(client, staff, login, "DEPOSIT", "5", "APPROVED", expect=403)
    approved = await act(client, manager, tx["id"], "approve")
    await set_maker_checker(kernel, False)
    own = await transaction(client, staff, login, "DEPOSIT", "7", "APPROVED")

    message = {"detail": "Maker-checker: the creator of a transaction cannot approve it"}
    assert refused == one_step == message
    assert approved["status"] == own["status"] == "APPROVED"
    assert sorted(t.amount for t in await transactions_of(kernel, login)) == [7, 100]
    assert await balance(kernel, login) == (Decimal("107"), 0)


async def test_withdrawal_limited_to_free_margin_with_open_positions(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "guard@test.io")
    await deposit(client, staff, login, "1000.00")
    # 0.5 lot EURUSD at 1.39298: margin 696.49; marked at bid 1.39286: -6.00
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.5")
    assert order["status"] == "executed"
    over = await transaction(client, staff, login, "WITHDRAWAL", "297.52")
    fits = await transaction(client, staff, login, "WITHDRAWAL", "297.51")

    refused = await act(client, staff, over["id"], "approve", expect=422)
    one_step = await transaction(client, staff, login, "WITHDRAWAL", "300", "APPROVED", expect=422)
    approved = await act(client, staff, fits["id"], "approve")

    # free margin = 1000 - 6.00 - 696.49 = 297.51 < balance 1000
    expected = {"detail": "Withdrawal exceeds the withdrawable amount 297.51"}
    assert refused == one_step == expected
    assert approved["status"] == "APPROVED"
    assert await balance(kernel, login) == (Decimal("702.49"), 0)
    assert [r.event_type for r in await ledger_rows(kernel, login)] == [
        "deposit",
        "order_open",
        "withdrawal",
    ]


async def test_withdrawal_without_positions_is_limited_to_the_balance(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "nopos@test.io")
    await deposit(client, staff, login, "100")
    refused = await transaction(
        client, staff, login, "WITHDRAWAL", "100.01", "APPROVED", expect=422
    )
    ok = await transaction(client, staff, login, "WITHDRAWAL", "100", "APPROVED")
    assert refused == {"detail": "Withdrawal exceeds the withdrawable amount 100.00"}
    assert ok["amount"] == -100
    assert await balance(kernel, login) == (0, 0)


async def test_credit_removal_keeps_equity_above_margin(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "credit@test.io")
    await deposit(client, staff, login, "700")
    await transaction(client, staff, login, "CREDIT_IN", "100", status="APPROVED")
    order = await market_order(client, kernel, trader, login, "EURUSD", 0, "0.5")
    assert order["status"] == "executed"
    # equity 700 + 100 - 6.00 = 794.00; margin 696.49: at most 97.51 of credit can go
    refused = await transaction(client, staff, login, "CREDIT_OUT", "97.52", "APPROVED", expect=422)
    ok = await transaction(client, staff, login, "CREDIT_OUT", "97.51", "APPROVED")
    above = await transaction(
        client, staff, login, "BONUS_CREDIT_OUT", "2.50", "APPROVED", expect=422
    )

    message = {"detail": "Credit removal exceeds free margin or the account's credit"}
    assert refused == above == message
    assert ok["account_amount"] == Decimal("-97.51")
    assert await balance(kernel, login) == (Decimal("700"), Decimal("2.49"))


async def test_withdrawal_approval_rules_by_role_with_fx_conversion(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "rules@test.io")
    await deposit(client, staff, login, "50000")
    agent = await staff_as(client, kernel, "agent@broker.test", "agent")
    manager = await staff_as(client, kernel, "manager@broker.test", "manager")
    compliance = await staff_as(client, kernel, "compliance@broker.test", "compliance")
    small = await transaction(client, staff, login, "WITHDRAWAL", "999.99")
    # 800 EUR x 1.39292 (EURUSD mid) = 1,114.34 USD: the manager band
    euros = await transaction(client, staff, login, "WITHDRAWAL", "800", currency="EUR")
    large = await transaction(client, staff, login, "WITHDRAWAL", "10000")

    assert (euros["amount"], euros["account_amount"], euros["usd_amount"]) == (
        -800,
        Decimal("-1114.34"),
        Decimal("-1114.34"),
    )
    assert (await act(client, agent, small["id"], "approve"))["status"] == "APPROVED"
    assert await act(client, agent, euros["id"], "approve", expect=403) == {
        "detail": "Withdrawal of 1114.34 USD requires role manager or higher "
        "(withdrawal approval rules); your role is agent"
    }
    assert await act(client, manager, large["id"], "approve", expect=403) == {
        "detail": "Withdrawal of 10000.00 USD requires role compliance or higher "
        "(withdrawal approval rules); your role is manager"
    }
    assert (await act(client, compliance, euros["id"], "approve"))["status"] == "APPROVED"
    assert (await act(client, staff, large["id"], "approve"))["status"] == "APPROVED"
    assert await balance(kernel, login) == (Decimal("37885.67"), 0)


async def test_deposits_are_not_subject_to_withdrawal_rules(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "deprules@test.io")
    agent = await staff_as(client, kernel, "agent@broker.test", "agent")
    big = await transaction(client, staff, login, "DEPOSIT", "25000")
    assert (await act(client, agent, big["id"], "approve"))["status"] == "APPROVED"


async def test_chargeback_freezes_on_negative_balance_and_is_refused_twice(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "chargeback@test.io")
    first = await deposit(client, staff, login, "500")
    second = await deposit(client, staff, login, "300")
    withdrawal = await transaction(client, staff, login, "WITHDRAWAL", "600", "APPROVED")
    url = f"/api/backoffice/transactions/{first['id']}/chargeback"

    response = await client.post(url, json={"reason": "Card dispute by cardholder"}, headers=staff)
    body = await response.json(loads=loads)
    again = await client.post(url, json={"reason": "again"}, headers=staff)
    wrong = await client.post(
        f"/api/backoffice/transactions/{withdrawal['id']}/chargeback",
        json={"reason": "x"},
        headers=staff,
    )

    assert response.status == 201
    assert body == {
        "chargeback_id": body["chargeback_id"],
        "original_transaction_id": first["id"],
        "amount": -500,
        "balance_after": -300,
        "account_frozen": True,
    }
    assert again.status == 409
    assert await again.json(loads=loads) == {
        "detail": f"Deposit already charged back ({body['chargeback_id']})"
    }
    assert wrong.status == 409
    assert await wrong.json(loads=loads) == {
        "detail": "Only approved DEPOSIT transactions can be charged back"
    }
    assert await compliance_status(kernel, login) == "frozen"
    rows = await ledger_rows(kernel, login)
    assert (rows[-1].event_type, rows[-1].balance_delta, rows[-1].balance_after) == (
        "chargeback",
        -500,
        -300,
    )
    assert rows[-1].idempotency_key == f"chargeback:{first['id']}"
    (charge,) = [t for t in await transactions_of(kernel, login) if t.type == "CHARGEBACK"]
    assert (charge.type, charge.status, charge.amount, charge.original_transaction_id) == (
        "CHARGEBACK",
        "APPROVED",
        -500,
        first["id"],
    )
    # the chargeback cannot be deleted, nor the charged-back deposit
    assert await act(client, staff, charge.id, "delete", expect=409) == {
        "detail": "A chargeback cannot be deleted; record a correction"
    }
    assert await act(client, staff, first["id"], "delete", expect=409) == {
        "detail": "Transaction has a chargeback or refunds; it cannot be deleted"
    }
    assert second["status"] == "APPROVED"


async def test_chargeback_keeping_a_positive_balance_does_not_freeze(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "cbok@test.io")
    first = await deposit(client, staff, login, "100")
    await deposit(client, staff, login, "900")
    response = await client.post(
        f"/api/backoffice/transactions/{first['id']}/chargeback",
        json={"reason": "fraud"},
        headers=staff,
    )
    body = await response.json(loads=loads)
    assert (body["balance_after"], body["account_frozen"]) == (900, False)
    assert await compliance_status(kernel, login) == "active"


async def test_bad_input_answers_404_and_422_with_every_field_error(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, _ = await register_trader(client, "bad@test.io")

    async def post(body: dict[str, Any]) -> tuple[int, Any]:
        response = await client.post(
            "/api/backoffice/transactions/manual", json=body, headers=staff
        )
        return response.status, await response.json(loads=loads)

    base = {"login": login, "type": "DEPOSIT", "currency": "USD"}
    assert await post({**base, "login": 99999, "amount": "10"}) == (
        404,
        {"detail": "Account not found"},
    )
    assert await post({**base, "amount": "10.001", "currency": "GBP"}) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "amount"],
                    "msg": "has more decimals than GBP allows (2)",
                    "type": "decimalPlaces",
                },
                {
                    "loc": ["body", "currency"],
                    "msg": "unsupported currency GBP (no conversion rate)",
                    "type": "currency",
                },
            ]
        },
    )
    assert await post({**base, "amount": "-5"}) == (
        422,
        {
            "detail": [
                {
                    "loc": ["body", "amount"],
                    "msg": "must be greater than 0",
                    "type": "exclusiveMinimum",
                }
            ]
        },
    )
    status, body = await post({"login": login, "type": "PAYOUT", "amount": "1e5"})
    assert status == 422
    assert sorted(tuple(e["loc"]) for e in body["detail"]) == [
        ("body", "amount"),
        ("body", "currency"),
        ("body", "type"),
    ]
    assert await transactions_of(kernel, login) == []


async def test_a_failure_inside_the_unit_of_work_leaves_no_ledger_row(
    client: Client, kernel: Kernel, staff: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    login, _ = await register_trader(client, "atomic@test.io")
    tx = await transaction(client, staff, login, "DEPOSIT", "250")

    def explode(*_args: Any) -> None:
        raise RuntimeError("outbox down")

    monkeypatch.setattr(TransactionService, "event", staticmethod(explode))
    response = await client.patch(f"/api/backoffice/transactions/{tx['id']}/approve", headers=staff)
    monkeypatch.undo()

    assert response.status == 500
    assert await ledger_rows(kernel, login) == []
    assert await balance(kernel, login) == (0, 0)
    assert [t.status for t in await transactions_of(kernel, login)] == ["PENDING"]


async def test_lists_filters_and_single_transaction(
    client: Client, kernel: Kernel, staff: dict[str, str]
) -> None:
    login, trader = await register_trader(client, "lists@test.io")
    other, _ = await register_trader(client, "other@test.io")
    await deposit(client, staff, login, "100")
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 60_000)
    pending = await transaction(client, staff, login, "WITHDRAWAL", "10")
    tick(kernel, "EURUSD", "1.39286", "1.39298", DAY_START_MS + 120_000)
    await transaction(client, staff, other, "DEPOSIT", "20")

    response = await client.get("/api/backoffice/transactions/pending-approval", headers=staff)
    queue = await response.json(loads=loads)
    assert [(t["login"], t["amount"]) for t in queue] == [(login, -10), (other, 20)]

    response = await client.get(
        f"/api/backoffice/transactions?account_id={pending['account_id']}&status=PENDING",
        headers=staff,
    )
    assert [t["id"] for t in await response.json(loads=loads)] == [pending["id"]]
    assert response.headers["X-Total-Count"] == "1"
    response = await client.get(
        "/api/backoffice/transactions?type=DEPOSIT&source=manual&limit=1", headers=staff
    )
    assert response.headers["X-Total-Count"] == "2" and len(await response.json(loads=loads)) == 1
    response = await client.get("/api/backoffice/transactions?status=LOST", headers=staff)
    assert response.status == 422

    response = await client.get(f"/api/backoffice/transactions/{pending['id']}", headers=staff)
    single = await response.json(loads=loads)
    assert (single["id"], single["status"], single["callbacks"]) == (pending["id"], "PENDING", [])
    legacy = await client.get(f"/transactions/{pending['id']}", headers=staff)
    assert legacy.headers["Deprecation"] == "true"

    # a trader sees the transactions of their own account, not another's
    response = await client.get(f"/api/crm/accounts/{login}/transactions", headers=trader)
    assert [t["amount"] for t in await response.json(loads=loads)] == [-10, 100]
    response = await client.get(f"/api/crm/accounts/{other}/transactions", headers=trader)
    assert response.status == 403
