"""Broker settings the money module reads (seed section 21), with their defaults.

Revision 0003 inserts :data:`DEFAULTS`; a missing row reads as its default, so code
never depends on the row being there.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from brokerkernel.kernel.money.models import BrokerSetting

#: When "true", the staff user who created a transaction cannot approve it (section 8).
MAKER_CHECKER_ENABLED: Final = "maker_checker_enabled"

DEFAULTS: Final[tuple[dict[str, str], ...]] = (
    {
        "key": MAKER_CHECKER_ENABLED,
        "value": "false",
        "description": "Require different user for transaction approval",
    },
)
_DEFAULT_VALUES: Final = {row["key"]: row["value"] for row in DEFAULTS}


async def get_setting(session: AsyncSession, key: str) -> str:
    """The setting's value, or its default when the row is missing (KeyError if none)."""
    row = await session.get(BrokerSetting, key)
    return row.value if row is not None else _DEFAULT_VALUES[key]


async def maker_checker_enabled(session: AsyncSession) -> bool:
    return (await get_setting(session, MAKER_CHECKER_ENABLED)).strip().lower() == "true"
