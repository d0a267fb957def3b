"""Column types shared by the models."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import DateTime, Dialect, Numeric, String
from sqlalchemy.types import TypeDecorator, TypeEngine


def _exact_text(value: Any) -> str | None:
    """SQLite's stored text of a decimal: its exact digits (``format(..., "f")``)."""
    if value is None:
        return None
    return format(value if type(value) is Decimal else Decimal(value), "f")


def _as_decimal(value: Any) -> Decimal | None:
    """A bound decimal where the column is NUMERIC (PostgreSQL)."""
    if value is None or type(value) is Decimal:
        return value
    return Decimal(value)


class DecimalType(TypeDecorator[Decimal]):
    """Exact decimal column: NUMERIC on PostgreSQL, text on SQLite.

    SQLite has no decimal type (its NUMERIC affinity stores doubles), so there the
    value is stored as its exact decimal string and read back as ``Decimal``; no money
    ever passes through a float. Aggregates over these columns are computed in Python
    on SQLite.
    """

    impl = Numeric
    cache_ok = True

    def __init__(self, precision: int = 28, scale: int = 10) -> None:
        super().__init__(precision=precision, scale=scale, asdecimal=True)
        self._precision = precision
        self._scale = scale

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(48))
        return dialect.type_descriptor(Numeric(self._precision, self._scale, asdecimal=True))

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """:meth:`process_bind_param` as one plain function when the impl has no
        processor of its own to compose with (SQLite's text, asyncpg's NUMERIC): bulk
        writers bind ~20 decimals a row."""
        if self.impl_instance.bind_processor(dialect) is not None:
            return super().bind_processor(dialect)
        return _exact_text if dialect.name == "sqlite" else _as_decimal

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return _exact_text(value) if dialect.name == "sqlite" else _as_decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones and hands back naive
    values, so binds are converted to UTC and results are marked UTC. A naive datetime
    is refused on bind: every time in the kernel is aware UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        """The bound value memoised per datetime: a batch of order-worker rows binds
        the same few timestamps hundreds of times, and SQLite's DATETIME text costs ~2
        us a value. Equal aware datetimes are one instant, so they bind the same UTC
        value."""
        process = super().bind_processor(dialect)
        return None if process is None else lru_cache(maxsize=1024)(process)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"expected an aware datetime, got {value!r}")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
