"""Helpers for the identity and access-control tests: roles, staff users, tokens,
a second kernel process on the same database and cache, and the wall clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select
from support import write_config

from brokerkernel.kernel.cache import MemoryCache
from brokerkernel.kernel.identity.service import Client, Identity
from brokerkernel.kernel.runtime import Kernel, Settings
from brokerkernel.kernel.staff import create_staff_user
from brokerkernel.kernel.storage.models import Customer, Role

STAFF_PASSWORD = "Staff-Pass-123"
TRADER_PASSWORD = "Trader-Pass-1"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def make_role(kernel: Kernel, name: str, permissions: list[str], **policy: Any) -> int:
    """Insert a role (view scope "all" unless given) and reload the RBAC cache."""
    values = {"customer_view_scope": "all", "customer_edit_scope": "all", **policy}
    async with kernel.db.transaction() as session:
        role = Role(name=name, display_name=name, permissions=permissions, **values)
        session.add(role)
    await kernel.identity.rbac.changed()
    return role.id


async def make_staff(
    kernel: Kernel, email: str, role: str | int, team_id: str | None = None
) -> str:
    user = await create_staff_user(
        kernel.db, email, STAFF_PASSWORD, role=role, first_name="Sam", team_id=team_id
    )
    await kernel.identity.rbac.changed()
    return user.id


async def staff_token(kernel: Kernel, email: str) -> str:
    body = await kernel.identity.staff_login(email, STAFF_PASSWORD, None, Client())
    return str(body["access_token"])


async def staff_with(
    kernel: Kernel, name: str, permissions: list[str], team_id: str | None = None, **policy: Any
) -> tuple[str, dict[str, str]]:
    """A role ``name`` with ``permissions``, a user holding it; (user id, headers)."""
    role_id = await make_role(kernel, name, permissions, **policy)
    user_id = await make_staff(kernel, f"{name}@broker.test", role_id, team_id)
    return user_id, bearer(await staff_token(kernel, f"{name}@broker.test"))


async def customer_id_of(kernel: Kernel, email: str) -> str:
    async with kernel.db.read() as session:
        found = await session.scalar(select(Customer.id).where(Customer.email == email))
    assert found is not None
    return found


def second_kernel(first: Kernel, tmp_path: Path, market_data_dir: Path) -> Kernel:
    """Another kernel process on the same database and cache port as ``first``.

    With Redis both use the same server (as two processes would); in-process, the
    second kernel's identity services are given the first one's MemoryCache, which
    stands in for the shared Redis.
    """
    config = write_config(tmp_path / "second.toml", market_data_dir)
    settings = Settings(
        config_path=config,
        database_url=first.settings.database_url,
        redis_url=first.settings.redis_url,
        var_dir=tmp_path / "var2",
        start_feeds=False,
        env={},
    )
    other = Kernel(settings)
    if isinstance(first.cache, MemoryCache):
        other.identity = Identity(
            other.db,
            first.cache,
            other.clock,
            other.tokens,
            other.kernel_config["auth"],
            other.kernel_config["gateway"],
        )
    return other


def kernel_with(
    tmp_path: Path,
    database_url: str,
    redis_url: str | None,
    market_data_dir: Path,
    extra: str,
) -> Kernel:
    """A test kernel (feeds not started) whose plugins.toml ends with ``extra``
    (e.g. a ``[kernel.gateway]`` table)."""
    config = write_config(tmp_path / "plugins.toml", market_data_dir, extra)
    settings = Settings(
        config_path=config,
        database_url=database_url,
        redis_url=redis_url,
        var_dir=tmp_path / "var",
        start_feeds=False,
        env={},
    )
    return Kernel(settings)


async def partner_tenant(kernel: Kernel, tenant_id: str, *, enabled: bool = True) -> None:
    """A partner tenant, prop-firm enabled unless ``enabled`` is False."""
    await kernel.identity.partners.create_tenant(tenant_id, f"{tenant_id} prop", enabled)


async def partner_client(
    kernel: Kernel, tenant_id: str, scopes: list[str] | tuple[str, ...]
) -> tuple[str, dict[str, str]]:
    """A new OAuth2 client of ``tenant_id`` granted ``scopes``: ``(client row id, bearer
    headers of a client-credentials token)``."""
    client, secret = await kernel.identity.partners.create_client(
        f"{tenant_id} firm", tenant_id, list(scopes), None
    )
    token = await kernel.identity.partners.exchange(client.client_id, secret, None)
    return client.id, bearer(token["access_token"])
