"""Partner OAuth2 clients and broker tenants (ZT4 partner API, "Authentication").

A broker admin issues a partner firm a ``client_id`` and ``client_secret`` scoped to
one broker tenant with granted scopes; the secret is shown once and only its SHA-256
is stored. ``POST /api/v1/oauth/token`` exchanges them (client-credentials grant,
RFC 6749 section 4.4) for a bearer token of ``expires_in`` 3600 s carrying the
granted scope, or the narrower requested scope; a scope wider than granted is
refused with ``invalid_scope``. Every partner request then passes the entitlement
gate: the tenant must be prop-firm enabled (403 ``prop_firm_not_enabled``) and the
token must carry the endpoint's scope (403 ``insufficient_scope``); both are checked
against the RBAC cache, so disabling a client or a tenant takes effect at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sqlalchemy import select

from brokerkernel.kernel.identity.errors import IdentityError
from brokerkernel.kernel.identity.models import BrokerTenant, PartnerClient
from brokerkernel.kernel.identity.seed import PARTNER_SCOPES
from brokerkernel.kernel.security import TokenIssuer, WallClock, digest, same_digest
from brokerkernel.kernel.storage.db import Database
from brokerkernel.kernel.storage.models import new_id

PARTNER_TOKEN_TTL_S = 3600
# Compared against when the client id is unknown, so both answers take equal time.
_DUMMY_DIGEST = digest(secrets.token_urlsafe(32))


class OAuthError(Exception):
    """An OAuth2 token-endpoint error (RFC 6749 section 5.2): ``error`` code,
    description and HTTP status (400, or 401 for ``invalid_client``)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def scope_text(scopes: Iterable[str]) -> str:
    """Space-separated scopes in the catalog's order (RFC 6749 section 3.3)."""
    chosen = set(scopes)
    return " ".join(s for s in PARTNER_SCOPES if s in chosen)


class PartnerService:
    """Partner clients, tenants and the client-credentials exchange; ``changed`` is
    awaited after each committed change (the RBAC cache reloads)."""

    def __init__(
        self,
        db: Database,
        tokens: TokenIssuer,
        wall: WallClock,
        changed: Callable[[], Awaitable[None]],
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._wall = wall
        self._changed = changed

    # --- tenants ----------------------------------------------------------------

    async def tenants(self) -> list[BrokerTenant]:
        async with self._db.read() as session:
            return list(await session.scalars(select(BrokerTenant).order_by(BrokerTenant.id)))

    async def create_tenant(
        self, tenant_id: str, name: str, prop_firm_enabled: bool
    ) -> BrokerTenant:
        """A new tenant; raises IdentityError 409 when the id is taken."""
        async with self._db.transaction() as session:
            if await session.get(BrokerTenant, tenant_id) is not None:
                raise IdentityError(409, "Tenant already exists")
            tenant = BrokerTenant(
                id=tenant_id,
                name=name,
                prop_firm_enabled=prop_firm_enabled,
                created_at=self._wall.now(),
            )
            session.add(tenant)
        await self._changed()
        return tenant

    async def update_tenant(self, tenant_id: str, changes: dict[str, Any]) -> BrokerTenant:
        """Change ``name`` / ``prop_firm_enabled``; raises IdentityError 404."""
        async with self._db.transaction() as session:
            tenant = await session.get(BrokerTenant, tenant_id, with_for_update=True)
            if tenant is None:
                raise IdentityError(404, "Tenant not found")
            for key in ("name", "prop_firm_enabled"):
                if key in changes:
                    setattr(tenant, key, changes[key])
        await self._changed()
        return tenant

    # --- clients ----------------------------------------------------------------

    async def create_client(
        self, name: str, tenant_id: str, scopes: list[str], created_by: str | None
    ) -> tuple[PartnerClient, str]:
        """A new client: ``(row, client_secret)``; the secret is not retrievable later.

        Raises IdentityError 404 when the tenant does not exist.
        """
        secret = secrets.token_urlsafe(32)
        async with self._db.transaction() as session:
            if await session.get(BrokerTenant, tenant_id) is None:
                raise IdentityError(404, "Tenant not found")
            client = PartnerClient(
                id=new_id(),
                client_id=f"pc_{secrets.token_hex(12)}",
                secret_hash=digest(secret),
                name=name,
                tenant_id=tenant_id,
                scopes=scope_text(scopes).split(),
                is_active=True,
                created_by=created_by,
                created_at=self._wall.now(),
                last_used_at=None,
            )
            session.add(client)
        await self._changed()
        return client, secret

    async def clients(self, tenant_id: str | None = None) -> list[PartnerClient]:
        query = select(PartnerClient).order_by(PartnerClient.created_at, PartnerClient.id)
        if tenant_id is not None:
            query = query.where(PartnerClient.tenant_id == tenant_id)
        async with self._db.read() as session:
            return list(await session.scalars(query))

    async def client(self, client_pk: str) -> PartnerClient:
        async with self._db.read() as session:
            client = await session.get(PartnerClient, client_pk)
        if client is None:
            raise IdentityError(404, "Partner client not found")
        return client

    async def update_client(
        self, client_pk: str, changes: dict[str, Any], *, rotate_secret: bool = False
    ) -> tuple[PartnerClient, str | None]:
        """Change ``name``, ``scopes``, ``is_active``; optionally issue a new secret
        (returned once; the old one stops working). Raises IdentityError 404."""
        secret = secrets.token_urlsafe(32) if rotate_secret else None
        async with self._db.transaction() as session:
            client = await session.get(PartnerClient, client_pk, with_for_update=True)
            if client is None:
                raise IdentityError(404, "Partner client not found")
            if "name" in changes:
                client.name = changes["name"]
            if "is_active" in changes:
                client.is_active = changes["is_active"]
            if "scopes" in changes:
                client.scopes = scope_text(changes["scopes"]).split()
            if secret is not None:
                client.secret_hash = digest(secret)
        await self._changed()
        return client, secret

    async def exchange(
        self, client_id: str, client_secret: str, requested: str | None
    ) -> dict[str, Any]:
        """The client-credentials grant: the token response, or raises OAuthError.

        ``requested`` is the space-separated ``scope`` parameter (None or empty:
        every granted scope).
        """
        async with self._db.transaction() as session:
            client = await session.scalar(
                select(PartnerClient).where(PartnerClient.client_id == client_id)
            )
            valid = same_digest(client_secret, client.secret_hash if client else _DUMMY_DIGEST)
            if client is None or not valid or not client.is_active:
                raise OAuthError("invalid_client", "Client authentication failed", 401)
            granted = set(client.scopes)
            wanted = set(requested.split()) if requested and requested.strip() else granted
            if not wanted <= granted:
                extra = scope_text(wanted - granted) or " ".join(sorted(wanted - granted))
                raise OAuthError("invalid_scope", f"Scope not granted to this client: {extra}")
            client.last_used_at = self._wall.now()
            scope = scope_text(wanted)
            tenant_id = client.tenant_id
        token = self._tokens.issue(
            client_id,
            {"type": "partner", "tenant_id": tenant_id, "scope": scope},
            ttl_s=PARTNER_TOKEN_TTL_S,
        )
        return {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": PARTNER_TOKEN_TTL_S,
            "scope": scope,
        }
