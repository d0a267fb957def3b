"""The market-order body's fast path (``_plain_order``) never accepts what the schema
refuses: a body it lets skip the JSON Schema walk is one ``ORDER_SCHEMA`` accepts, and
every refused body still gets the schema's 422."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokerkernel.api import validation
from brokerkernel.api.errors import ApiError
from brokerkernel.api.jsonio import loads
from brokerkernel.api.routes.customer import ORDER_SCHEMA, _plain_order


def schema_accepts(data: Any) -> bool:
    try:
        validation.check(ORDER_SCHEMA, data, "body")
    except ApiError:
        return False
    return True


@pytest.mark.parametrize(
    ("body", "fast", "valid"),
    [
        ('{"login":5,"symbol":"EURUSD","cmd":0,"volume":0.01}', True, True),
        ('{"login":5,"symbol":"EURUSD","cmd":1,"volume":1}', True, True),
        ('{"login":5,"symbol":"EURUSD","cmd":0,"volume":1E17}', True, True),
        ('{"login":5,"symbol":"EURUSD","cmd":0.0,"volume":1}', False, True),
        ('{"login":5,"symbol":"EURUSD","cmd":true,"volume":0.01}', False, False),
        ('{"login":0,"symbol":"EURUSD","cmd":0,"volume":0.01}', False, False),
        ('{"login":5.0,"symbol":"EURUSD","cmd":0,"volume":1}', False, False),
        ('{"login":5,"symbol":"","cmd":0,"volume":0.01}', False, False),
        ('{"login":5,"symbol":"EURUSD","cmd":2,"volume":0.01}', False, False),
        ('{"login":5,"symbol":"EURUSD","cmd":0,"volume":0}', False, False),
        ('{"login":5,"symbol":"EURUSD","cmd":0,"volume":-1}', False, False),
        ('{"login":5,"symbol":"EURUSD","cmd":0,"volume":1e18}', False, False),
        ('{"login":5,"symbol":"EURUSD","cmd":0,"volume":100000000000000001}', False, False),
        ('{"login":5,"symbol":"EURUSD","cmd":0,"volume":0.00000000001}', False, False),
        ('{"login":5,"symbol":"EURUSD","cmd":0,"volume":1,"x":1}', False, False),
        ('{"login":5,"symbol":"EURUSD","cmd":0}', False, False),
        ("[1]", False, False),
    ],
)
def test_fast_path_takes_only_plain_valid_orders(body: str, fast: bool, valid: bool) -> None:
    data = loads(body)
    assert (_plain_order(data), schema_accepts(data)) == (fast, valid)


VALUES = st.one_of(
    st.integers(min_value=-3, max_value=3),
    st.integers(min_value=10**16, max_value=10**18),
    st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=-2, max_value=2),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=2),
)
FIELDS = st.sampled_from(["login", "symbol", "cmd", "volume", "extra"])
#: Deterministic, no timing: no deadline, no too-slow check (a shared, loaded machine).
PROPERTY = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.dictionaries(FIELDS, VALUES, max_size=5))
def test_fast_path_never_accepts_what_the_schema_refuses(data: dict[str, Any]) -> None:
    assert not _plain_order(data) or schema_accepts(data)


@PROPERTY
@given(
    st.integers(min_value=1, max_value=10**9),
    st.text(min_size=1, max_size=32),
    st.sampled_from([0, 1]),
    st.decimals(min_value=Decimal("0.0000000001"), max_value=Decimal(10**17), places=10),
)
def test_fast_path_takes_every_plain_order(
    login: int, symbol: str, cmd: int, volume: Decimal
) -> None:
    data = {"login": login, "symbol": symbol, "cmd": cmd, "volume": volume}
    assert (_plain_order(data), schema_accepts(data)) == (volume > 0, volume > 0)
