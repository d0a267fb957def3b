"""Customer PII masking per staff role (seed section 19: ``pii_email``, ``pii_phone``).

``full`` shows the value, ``masked`` keeps just enough to recognise it
(``tr***@example.com``, the seed's example; ``+44******000``), ``hidden`` replaces
it with ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from brokerkernel.kernel.identity.rbac import RolePolicy


def mask_email(email: str) -> str:
    """``trader@example.com`` -> ``tr***@example.com`` (two characters of the local part)."""
    local, at, domain = email.partition("@")
    if not at:
        return local[:1] + "***"
    return f"{local[:2] if len(local) > 2 else local[:1]}***@{domain}"


def mask_phone(phone: str) -> str:
    """``+447700900000`` -> ``+44*******000``: the first and last three characters."""
    if len(phone) <= 6:
        return "*" * len(phone)
    return phone[:3] + "*" * (len(phone) - 6) + phone[-3:]


def _apply(value: Any, rule: str, mask: Any) -> Any:
    if value is None or rule == "full":
        return value
    if rule == "masked":
        return mask(str(value))
    return None


def mask_customer(policy: RolePolicy | None, customer: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a customer response with ``email`` and ``phone`` shown as ``policy`` allows.

    ``policy`` None (no role, e.g. a degraded check without claims) hides both.
    """
    email_rule = policy.pii_email if policy is not None else "hidden"
    phone_rule = policy.pii_phone if policy is not None else "hidden"
    shown = dict(customer)
    if "email" in shown:
        shown["email"] = _apply(shown["email"], email_rule, mask_email)
    if "phone" in shown:
        shown["phone"] = _apply(shown["phone"], phone_rule, mask_phone)
    return shown
