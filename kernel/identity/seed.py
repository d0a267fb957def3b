"""Reference data inserted by the identity migration (``20261121_0002``).

The permission catalog holds every permission word the seed names under an
endpoint (``broker-platform-api-reference.txt``) plus ``manage_partner_clients``
(the ZT4 partner API's "Admin" auth). The baseline roles get their RBAC columns and
the administrator every new permission. Changing a value here does not change
existing databases: ship a migration.
"""

from __future__ import annotations

from typing import Any, Final

from brokerkernel.kernel.storage.seed import PERMISSIONS

#: (name, category, display name) of every permission in the catalog, in id order.
PERMISSION_CATALOG: Final[tuple[tuple[str, str, str], ...]] = (
    ("view_customers", "customers", "View customers"),
    ("edit_customer_details", "customers", "Edit customer details"),
    ("view_orders", "trading", "View and manage orders"),
    ("create_deposits", "finance", "Create deposits"),
    ("approve_deposits", "finance", "Approve transactions"),
    ("process_chargebacks", "finance", "Process chargebacks"),
    ("close_accounts", "finance", "Close trading accounts"),
    ("manage_groups", "trading", "Manage trading groups"),
    ("manage_instruments", "trading", "Manage instruments"),
    ("manage_prices", "trading", "Manage prices"),
    ("view_audit", "compliance", "View audit trail"),
    ("view_users", "admin", "View staff users"),
    ("edit_users", "admin", "Edit staff users and teams"),
    ("manage_roles", "admin", "Manage roles and permissions"),
    ("manage_broker_config", "platform", "Manage broker configuration"),
    ("manage_templates", "platform", "Manage email and SMS templates"),
    ("manage_workflows", "platform", "Manage workflows"),
    ("manage_compliance", "compliance", "Manage compliance"),
    ("manage_statuses", "crm", "Manage CRM statuses"),
    ("manage_promo_codes", "platform", "Manage promo codes"),
    ("import_customers", "customers", "Import customers"),
    ("manage_payment_routing", "finance", "Manage payment routing"),
    ("create_tasks", "crm", "Create CRM tasks"),
    ("assign_customers", "crm", "Assign customers to agents"),
    ("manage_partner_clients", "admin", "Manage partner API clients"),
)

#: Permission names added by revision 0002 (the baseline granted the others).
NEW_PERMISSIONS: Final[tuple[str, ...]] = tuple(
    name for name, _category, _display in PERMISSION_CATALOG if name not in PERMISSIONS
)

#: RBAC columns of the baseline roles, by role name.
ROLE_POLICIES: Final[dict[str, dict[str, Any]]] = {
    "admin": {
        "description": "Full access to every function",
        "customer_view_scope": "all",
        "customer_edit_scope": "all",
        "pii_email": "full",
        "pii_phone": "full",
        "can_export_pii": True,
        "level": 100,
    },
    "dealer": {
        "description": "Dealing desk: groups, instruments, prices and positions",
        "customer_view_scope": "all",
        "customer_edit_scope": "none",
        "pii_email": "masked",
        "pii_phone": "masked",
        "can_export_pii": False,
        "level": 50,
    },
    "support": {
        "description": "Customer support: profiles, orders and deposits",
        "customer_view_scope": "all",
        "customer_edit_scope": "all",
        "pii_email": "masked",
        "pii_phone": "masked",
        "can_export_pii": False,
        "level": 10,
    },
}

#: The tenant of a single-broker installation (prop-firm API off until enabled).
DEFAULT_TENANT: Final[dict[str, Any]] = {
    "id": "default",
    "name": "Default broker",
    "prop_firm_enabled": False,
}

#: Partner OAuth2 scopes (ZT4 partner API, "Scopes reference": Set 1 and Set 2).
PARTNER_SCOPES: Final[tuple[str, ...]] = (
    "plans:read",
    "plans:write",
    "accounts:read",
    "accounts:write",
    "balance:write",
    "payouts:read",
    "payouts:write",
    "users:write",
    "events:subscribe",
    "catalog:read",
    "accounts:provision",
    "metrics:read",
    "payouts:request",
)
