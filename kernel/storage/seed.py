"""Reference data inserted by the baseline migration (``20261121_0001``).

Plain data, so tests and other code can refer to the rows that every freshly
migrated database holds: the permission codes, the staff roles, the default
trading group and the instrument catalog of the five symbols in
``../shared/data/market``.

The baseline migration reads these constants when it runs. Changing a value here
does not change existing databases: ship a new migration that updates the rows (and
keep these constants equal to what a fresh ``upgrade head`` produces).

Catalog notes:

* ``spread`` is the catalog's typical spread in pips of ``pip_size`` (what a
  broker shows in its contract specifications); replayed quotes carry their own
  bid/ask, and a group's markup lives in ``group_instruments.spread``.
* ``digits`` follow the market data: OANDA quotes XAUUSD with 3 decimals, FXCM
  quotes USDJPY with 3, Coinbase quotes BTCUSD in cents.
* ``stale_threshold_ms`` is 10 s for tick data (EURUSD, XAUUSD) and 120 s for
  symbols whose data are one-minute bars (GBPUSD, USDJPY, BTCUSD).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

#: Every permission code a staff role can grant (seed section 19).
PERMISSIONS: Final[tuple[str, ...]] = (
    "view_customers",
    "edit_customer_details",
    "view_orders",
    "create_deposits",
    "approve_deposits",
    "process_chargebacks",
    "close_accounts",
    "manage_groups",
    "manage_instruments",
    "manage_prices",
    "view_audit",
    "view_users",
    "edit_users",
    "manage_roles",
)

#: Timestamp written into ``created_at`` of every seeded row (fixed: reproducible).
SEED_CREATED_AT: Final[datetime] = datetime(2026, 11, 21, 0, 0, 0, tzinfo=UTC)

#: Staff roles. Ids are fixed so that references to them are stable.
ROLES: Final[list[dict[str, Any]]] = [
    {
        "id": 1,
        "name": "admin",
        "display_name": "Administrator",
        "permissions": list(PERMISSIONS),
        "is_active": True,
    },
    {
        "id": 2,
        "name": "dealer",
        "display_name": "Dealer",
        "permissions": [
            "view_customers",
            "view_orders",
            "manage_groups",
            "manage_instruments",
            "manage_prices",
            "view_audit",
        ],
        "is_active": True,
    },
    {
        "id": 3,
        "name": "support",
        "display_name": "Support",
        "permissions": [
            "view_customers",
            "edit_customer_details",
            "view_orders",
            "create_deposits",
        ],
        "is_active": True,
    },
]

#: Id of the default trading group ``standard``.
DEFAULT_GROUP_ID: Final[str] = "5e1f0c2a-8d4b-4c57-9a0e-0b6f2d3c4e01"

#: The default trading group: new accounts land here unless something says otherwise.
DEFAULT_GROUP: Final[dict[str, Any]] = {
    "id": DEFAULT_GROUP_ID,
    "name": "standard",
    "description": "Default trading group",
    "currency": "USD",
    "default_leverage": 100,
    "margin_call_level": Decimal("100"),
    "stopout_level": Decimal("50"),
    "commission_type": None,
    "commission_value": None,
    "swap_free": False,
    "swap_enabled": True,
    "swap_multiplier": Decimal("1"),
    "swap_free_days": 0,
    "is_islamic": False,
    "is_default": True,
    "max_exposure": None,
    "net_max_exposure": False,
    "is_active": True,
    "created_at": SEED_CREATED_AT,
}

GROUPS: Final[list[dict[str, Any]]] = [DEFAULT_GROUP]


def _forex(
    instrument_id: str,
    symbol: str,
    display_name: str,
    *,
    digits: int,
    pip_size: str,
    spread: str,
    stale_threshold_ms: int,
) -> dict[str, Any]:
    base, quote = symbol[:3], symbol[3:]
    return {
        "id": instrument_id,
        "symbol": symbol,
        "display_name": display_name,
        "category": "forex",
        "asset_class": "forex_majors",
        "calc_mode": "FOREX",
        "base_currency": base,
        "quote_currency": quote,
        "profit_currency": quote,
        "digits": digits,
        "pip_size": Decimal(pip_size),
        "contract_size": Decimal("100000"),
        "min_lot": Decimal("0.01"),
        "max_lot": Decimal("100"),
        "lot_step": Decimal("0.01"),
        "margin_rate": Decimal("0.01"),
        "spread": Decimal(spread),
        "stale_threshold_ms": stale_threshold_ms,
        "is_active": True,
        "is_enabled": True,
        "tradeability": None,
        "provider": "replay",
        "created_at": SEED_CREATED_AT,
    }


#: The instrument catalog: the five symbols of ``../shared/data/market``.
INSTRUMENTS: Final[list[dict[str, Any]]] = [
    _forex(
        "0b7c1d2e-3f40-4a51-8b62-7c83d94ea001",
        "EURUSD",
        "Euro / US Dollar",
        digits=5,
        pip_size="0.0001",
        spread="0.2",
        stale_threshold_ms=10_000,
    ),
    _forex(
        "0b7c1d2e-3f40-4a51-8b62-7c83d94ea002",
        "GBPUSD",
        "British Pound / US Dollar",
        digits=5,
        pip_size="0.0001",
        spread="0.4",
        stale_threshold_ms=120_000,
    ),
    _forex(
        "0b7c1d2e-3f40-4a51-8b62-7c83d94ea003",
        "USDJPY",
        "US Dollar / Japanese Yen",
        digits=3,
        pip_size="0.01",
        spread="0.3",
        stale_threshold_ms=120_000,
    ),
    {
        "id": "0b7c1d2e-3f40-4a51-8b62-7c83d94ea004",
        "symbol": "XAUUSD",
        "display_name": "Gold / US Dollar",
        "category": "metals",
        "asset_class": "metals",
        "calc_mode": "CFDLEVERAGE",
        "base_currency": "XAU",
        "quote_currency": "USD",
        "profit_currency": "USD",
        "digits": 3,
        "pip_size": Decimal("0.01"),
        "contract_size": Decimal("100"),
        "min_lot": Decimal("0.01"),
        "max_lot": Decimal("100"),
        "lot_step": Decimal("0.01"),
        "margin_rate": Decimal("0.01"),
        "spread": Decimal("25"),
        "stale_threshold_ms": 10_000,
        "is_active": True,
        "is_enabled": True,
        "tradeability": None,
        "provider": "replay",
        "created_at": SEED_CREATED_AT,
    },
    {
        "id": "0b7c1d2e-3f40-4a51-8b62-7c83d94ea005",
        "symbol": "BTCUSD",
        "display_name": "Bitcoin / US Dollar",
        "category": "crypto",
        "asset_class": "crypto",
        "calc_mode": "CFDLEVERAGE",
        "base_currency": "BTC",
        "quote_currency": "USD",
        "profit_currency": "USD",
        "digits": 2,
        "pip_size": Decimal("1"),
        "contract_size": Decimal("1"),
        "min_lot": Decimal("0.01"),
        "max_lot": Decimal("100"),
        "lot_step": Decimal("0.01"),
        "margin_rate": Decimal("0.5"),
        "spread": Decimal("10"),
        "stale_threshold_ms": 120_000,
        "is_active": True,
        "is_enabled": True,
        "tradeability": None,
        "provider": "replay",
        "created_at": SEED_CREATED_AT,
    },
]

#: Symbols of the seeded catalog, in insertion order.
INSTRUMENT_SYMBOLS: Final[tuple[str, ...]] = tuple(row["symbol"] for row in INSTRUMENTS)
