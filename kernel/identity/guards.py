"""Privilege-escalation guards (seed section 19).

A staff user cannot grant a permission they do not hold, cannot give a role a
scope, PII visibility, export right or level above their own role's, cannot edit a
role or a user whose role ranks above theirs, and cannot assign a role that would
give someone more than they have. Each check raises IdentityError 403 naming what
exceeds the caller's own access.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from brokerkernel.kernel.identity.errors import IdentityError
from brokerkernel.kernel.identity.rbac import EDIT_SCOPES, PII_LEVELS, VIEW_SCOPES, RolePolicy

_ORDERS: dict[str, tuple[str, ...]] = {
    "customer_view_scope": VIEW_SCOPES,
    "customer_edit_scope": EDIT_SCOPES,
    "pii_email": PII_LEVELS,
    "pii_phone": PII_LEVELS,
}


def _rank(column: str, value: Any) -> int:
    if column in _ORDERS:
        return _ORDERS[column].index(value)
    if column == "can_export_pii":
        return int(bool(value))
    return int(value)  # level


def check_role_values(actor: RolePolicy, values: Mapping[str, Any]) -> None:
    """Refuse role column values above the actor's own role (create or update)."""
    for column in (*_ORDERS, "can_export_pii", "level"):
        if column in values and _rank(column, values[column]) > _rank(
            column, getattr(actor, column)
        ):
            raise IdentityError(
                403,
                f"Privilege escalation: {column} {values[column]!r} exceeds your own "
                f"{getattr(actor, column)!r}",
            )


def check_grants(actor_permissions: frozenset[str], permissions: Iterable[str]) -> None:
    """Refuse granting permissions the actor does not hold."""
    missing = sorted(set(permissions) - actor_permissions)
    if missing:
        raise IdentityError(403, f"Privilege escalation: you do not hold {', '.join(missing)}")


def check_role_rank(actor: RolePolicy, target: RolePolicy, what: str = "role") -> None:
    """Refuse acting on a role (or a user holding it) that ranks above the actor's."""
    if target.level > actor.level:
        raise IdentityError(
            403, f"Privilege escalation: the {what} ranks above your own (level {target.level})"
        )


def check_assignable(
    actor: RolePolicy, actor_permissions: frozenset[str], target: RolePolicy
) -> None:
    """Refuse assigning ``target`` to a user when it exceeds the actor in any way."""
    check_role_rank(actor, target)
    check_role_values(actor, {column: getattr(target, column) for column in _ORDERS})
    check_role_values(actor, {"can_export_pii": target.can_export_pii})
    check_grants(actor_permissions, target.permissions)
