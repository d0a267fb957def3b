"""Tables of the market data service (revision ``0005``): OHLC bars and price outages.

Prices are :class:`~brokerkernel.kernel.storage.types.DecimalType` in the symbol's
quote currency; times are aware UTC.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import BigInteger, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from brokerkernel.kernel.storage.models import Base


class PriceBar(Base):
    """One OHLC bar of ``symbol`` (seed section 14, ``GET /api/prices/history``).

    ``timeframe`` is M1, M5, M15, H1, H4 or D1; ``open_time`` the bar's start (UTC,
    aligned to the timeframe); ``open``/``high``/``low``/``close`` prices of the
    configured side (bid by default, as MT5 charts); ``volume`` the tick count.
    """

    __tablename__ = "price_bars"

    symbol: Mapped[str] = mapped_column(String(32), primary_key=True)
    timeframe: Mapped[str] = mapped_column(String(3), primary_key=True)
    open_time: Mapped[datetime] = mapped_column(primary_key=True)
    open: Mapped[Decimal]
    high: Mapped[Decimal]
    low: Mapped[Decimal]
    close: Mapped[Decimal]
    volume: Mapped[int] = mapped_column(BigInteger)


class PriceOutage(Base):
    """A window in which ``symbol`` had no tick for longer than ``threshold_ms``
    (seed section 14, ``GET /api/prices/outages``).

    ``started_at`` = ``last_tick_at`` + ``threshold_ms`` (the moment it went stale);
    ``ended_at`` is the next tick's time, null while the outage lasts;
    ``duration_ms`` = ``ended_at`` - ``started_at``. ``id`` is derived from the
    symbol and ``last_tick_at``, so recording an outage twice is idempotent.
    """

    __tablename__ = "price_outages"
    __table_args__ = (Index("ix_price_outages_symbol_started_at", "symbol", "started_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    symbol: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    threshold_ms: Mapped[int] = mapped_column(Integer)
    last_tick_at: Mapped[datetime]
