"""``plugins.toml`` loading and validation.

Layout::

    [kernel]                     # the kernel's own settings (KERNEL_SCHEMA)
    execution_venue = "bbook"

    [plugins.replay]             # one section per plugin; the name is the entry point's
    enabled = true               # kernel-owned key, default true; false keeps it blocked
    speed = 1

Every enabled plugin's section is validated against the plugin's ``CONFIG_SCHEMA``
(Draft 2020-12; the kernel closes it with ``additionalProperties: false`` at the top
level), defaults are applied, and ``${NAME}`` / ``${NAME:-default}`` references in
string values are resolved from the environment. Properties marked
``"writeOnly": true`` are secrets: :func:`redact` replaces them wherever config is
shown or logged. All problems are collected and raised at once as
:class:`ConfigError`, each naming the file, the section and the key.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError

from brokerkernel.kernel.kyc import KYC_SCHEMA
from brokerkernel.kernel.marketdata.config import MARKET_DATA_SCHEMA
from brokerkernel.kernel.money.config import PAYMENTS_SCHEMA
from brokerkernel.kernel.trading.config import TRADING_SCHEMA

REDACTED = "***"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

#: ``[kernel.gateway]``: cross-cutting request handling (seed section 1).
_GATEWAY_PROPERTIES: dict[str, Any] = {
    "rate_limit_per_user": {
        "type": "integer",
        "minimum": 0,
        "default": 300,
        "description": "Requests per window per authenticated user (0: unlimited).",
    },
    "rate_limit_registration_per_ip": {
        "type": "integer",
        "minimum": 0,
        "default": 600,
        "description": "POST /customers/register requests per window per IP (0: unlimited).",
    },
    "rate_limit_auth_per_ip": {
        "type": "integer",
        "minimum": 0,
        "default": 60,
        "description": "Login, password-reset, autologin and OAuth2 token requests per "
        "window per IP (0: unlimited).",
    },
    "rate_limit_window_s": {"type": "integer", "minimum": 1, "default": 60},
    "idempotency_ttl_s": {
        "type": "integer",
        "minimum": 1,
        "default": 86400,
        "description": "How long a saved response is replayed for its Idempotency-Key.",
    },
    "idempotency_lock_s": {
        "type": "integer",
        "minimum": 1,
        "default": 300,
        "description": "How long a key stays claimed by a request that never finishes.",
    },
    "forwarded_for_hops": {
        "type": "integer",
        "minimum": 0,
        "default": 0,
        "description": "Trusted proxies in front of the API: the client IP is that many "
        "entries from the end of X-Forwarded-For (0: the socket peer).",
    },
}
GATEWAY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": _GATEWAY_PROPERTIES,
    "default": {key: prop["default"] for key, prop in _GATEWAY_PROPERTIES.items()},
}

#: ``[kernel.auth]``: sessions, one-time tokens, 2FA and the RBAC cache (seed section 2).
_AUTH_PROPERTIES: dict[str, Any] = {
    "refresh_reuse_grace_s": {
        "type": "number",
        "minimum": 0,
        "default": 10,
        "description": "Seconds a rotated refresh token may still be presented (two "
        "concurrent refreshes); later reuse revokes the session.",
    },
    "autologin_expiry_hours": {
        "anyOf": [
            {"type": "integer", "minimum": 1},
            {"type": "string", "pattern": "^[1-9][0-9]*$"},
        ],
        "default": 72,
        "description": "Lifetime of affiliate autologin links, e.g. "
        '"${AUTOLOGIN_EXPIRY_HOURS:-72}".',
    },
    "autologin_organic_minutes": {"type": "integer", "minimum": 1, "default": 15},
    "password_reset_ttl_s": {"type": "integer", "minimum": 60, "default": 900},
    "password_reset_max_active": {"type": "integer", "minimum": 1, "default": 3},
    "frontend_url": {
        "type": "string",
        "default": "",
        "description": "Base URL of the trader front end for reset and autologin links "
        "(empty: the URL the request came in on).",
    },
    "totp_issuer": {"type": "string", "minLength": 1, "default": "brokerkernel"},
    "rbac_poll_s": {
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 1,
        "description": "How often each process checks for RBAC changes by others.",
    },
}
AUTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": _AUTH_PROPERTIES,
    "default": {key: prop["default"] for key, prop in _AUTH_PROPERTIES.items()},
}

KERNEL_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "execution_venue": {
            "type": "string",
            "default": "bbook",
            "description": "Name of the ExecutionVenue that fills market deals.",
        },
        "clock": {
            "type": "string",
            "default": "wall",
            "description": "Price feed whose tick times drive the market clock "
            "(e.g. 'replay' or 'manual'), or 'wall' for wall time.",
        },
        "fx_conversion": {
            "enum": ["mid", "bid_ask"],
            "default": "mid",
            "description": "Rate side used to convert profit and margin to the account "
            "currency: 'mid', or 'bid_ask' (the side less favourable to the account).",
        },
        "jwt_secret": {
            "type": "string",
            "default": "",
            "writeOnly": True,
            "description": "HS256 signing key for access tokens. Empty: a random key is "
            "generated once and kept in ./var/jwt_secret (single-process SQLite only).",
        },
        "order_request_ttl_s": {
            "type": "integer",
            "minimum": 1,
            "default": 300,
            "description": "Seconds an async order request's status can be polled.",
        },
        "cors_origins": {
            "type": "array",
            "items": {"type": "string"},
            "default": [],
            "description": "Origins allowed by CORS ('*' for any).",
        },
        "gateway": GATEWAY_SCHEMA,
        "auth": AUTH_SCHEMA,
        "market_data": MARKET_DATA_SCHEMA,
        "payments": PAYMENTS_SCHEMA,
        "trading": TRADING_SCHEMA,
        "kyc": KYC_SCHEMA,
    },
}


class ConfigError(Exception):
    """Every problem found in the configuration; ``errors`` holds one line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated configuration: the kernel section and each enabled plugin's section."""

    path: Path
    kernel: Mapping[str, Any]
    plugins: Mapping[str, Mapping[str, Any]]
    disabled: frozenset[str] = field(default_factory=frozenset)


def read_toml(path: Path) -> tuple[dict[str, Any], list[str]]:
    """Parse ``path``; returns the document and the errors (file missing, bad TOML)."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh), []
    except FileNotFoundError:
        return {}, [f"{path}: file not found"]
    except tomllib.TOMLDecodeError as exc:
        return {}, [f"{path}: invalid TOML: {exc}"]
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start]
        return {}, [
            f"{path}: invalid TOML: not UTF-8 text (byte 0x{bad:02x} at offset {exc.start})"
        ]
    except OSError as exc:
        return {}, [f"{path}: cannot read: {exc.strerror or type(exc).__name__}"]


def plugin_sections(
    document: Mapping[str, Any], path: Path
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The ``[plugins.*]`` tables of a parsed document (including disabled ones)."""
    errors = [
        f"{path}: unknown top-level key '{key}' (expected [kernel] and [plugins.<name>])"
        for key in document
        if key not in ("kernel", "plugins")
    ]
    plugins = document.get("plugins", {})
    if not isinstance(plugins, dict):
        return {}, [*errors, f"{path}: 'plugins' must be a table of [plugins.<name>] sections"]
    sections: dict[str, dict[str, Any]] = {}
    for name, section in plugins.items():
        if not isinstance(section, dict):
            errors.append(f"{path}: [plugins.{name}] must be a table")
            continue
        enabled = section.get("enabled", True)
        if not isinstance(enabled, bool):
            errors.append(f"{path}: [plugins.{name}] enabled: must be true or false")
        sections[name] = section
    return sections, errors


def is_enabled(section: Mapping[str, Any]) -> bool:
    return section.get("enabled", True) is not False


def closed_schema(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The plugin's schema with ``additionalProperties: false`` at the top level."""
    closed = copy.deepcopy(dict(schema or {"type": "object", "properties": {}}))
    closed.setdefault("type", "object")
    closed.setdefault("additionalProperties", False)
    return closed


def validate_section(
    schema: Mapping[str, Any],
    section: Mapping[str, Any],
    where: str,
    env: Mapping[str, str],
    kernel_keys: Collection[str] = ("enabled",),
) -> tuple[dict[str, Any], list[str]]:
    """Resolve ``${ENV}`` references, apply defaults and validate one section.

    ``where`` prefixes every error (``"plugins.toml: [plugins.replay]"``). Keys in
    ``kernel_keys`` (the kernel-owned ``enabled`` of a plugin section) are left out;
    pass ``()`` for the ``[kernel]`` section itself. Returns the resolved section
    (defaults applied) and the list of errors, one per unexpected key; an error about
    a ``writeOnly`` value never shows the value.
    """
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return {}, [
            f"{where}: the plugin's CONFIG_SCHEMA is not a valid JSON Schema: {exc.message}"
        ]
    errors: list[str] = []
    values = {k: v for k, v in section.items() if k not in kernel_keys}
    resolved = _resolve_env(values, env, where, [], errors)
    instance = copy.deepcopy(resolved)
    found: list[tuple[str, str]] = []
    for error in DefaultingValidator(schema).iter_errors(instance):
        if error.validator == "additionalProperties" and error.validator_value is False:
            # jsonschema folds every unexpected key into one message: one line per key.
            prefix = [str(p) for p in error.absolute_path]
            for extra in _additional_keys(error.instance, error.schema):
                message = f"Additional properties are not allowed ({extra!r} was unexpected)"
                found.append((".".join([*prefix, extra]), message))
        elif _is_secret(schema, error.absolute_path):
            message = f"invalid secret value (not shown): fails {error.validator!r}"
            found.append((_error_key(error), message))
        else:
            found.append((_error_key(error), error.message))
    errors += [f"{where} {key}: {message}" for key, message in sorted(found)]
    return instance, errors


def redact(schema: Mapping[str, Any], value: Any) -> Any:
    """A copy of ``value`` with every ``writeOnly`` property replaced by ``'***'``.

    Follows ``properties`` into nested tables and ``items`` into arrays. An empty or
    missing secret (``""``/``None``) is shown as it is, so "not set" stays visible.
    """
    if isinstance(value, list):
        items = schema.get("items", {})
        return [_redact_item(items if isinstance(items, Mapping) else {}, v) for v in value]
    if not isinstance(value, Mapping):
        return value
    properties = schema.get("properties", {})
    out: dict[str, Any] = {}
    for key, item in value.items():
        sub = properties.get(key, {}) if isinstance(properties, Mapping) else {}
        out[key] = _redact_item(sub if isinstance(sub, Mapping) else {}, item)
    return out


def _redact_item(schema: Mapping[str, Any], item: Any) -> Any:
    if schema.get("writeOnly") and item not in (None, ""):
        return REDACTED
    return redact(schema, item)


def _is_secret(schema: Any, path: Iterable[Any]) -> bool:
    """Whether the value at ``path`` is, or lies inside, a ``writeOnly`` property."""
    node = schema
    for step in path:
        if not isinstance(node, Mapping):
            return False
        if node.get("writeOnly"):
            return True
        if isinstance(step, int):
            node = node.get("items", {})
        else:
            properties = node.get("properties", {})
            node = properties.get(step, {}) if isinstance(properties, Mapping) else {}
    return isinstance(node, Mapping) and bool(node.get("writeOnly"))


def _additional_keys(instance: Any, schema: Mapping[str, Any]) -> list[str]:
    """Keys of ``instance`` matched by neither ``properties`` nor ``patternProperties``."""
    if not isinstance(instance, Mapping):
        return []
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    return [
        str(key)
        for key in instance
        if key not in properties and not any(re.search(p, str(key)) for p in patterns)
    ]


def _resolve_env(
    value: Any, env: Mapping[str, str], where: str, key: list[str], errors: list[str]
) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors.append(
                f"{where} {'.'.join(key) or '(root)'}: environment variable ${{{name}}} is not set"
            )
            return ""

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _resolve_env(v, env, where, [*key, k], errors) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, env, where, [*key, str(i)], errors) for i, v in enumerate(value)]
    return value


def _error_key(error: ValidationError) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.validator_value, list):
        missing = re.match(r"'([^']+)'", error.message)
        if missing:
            path.append(missing.group(1))
    return ".".join(path) or "(section)"


def _extend_with_defaults(validator_class: Any) -> Any:
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(
        validator: Any, properties: Mapping[str, Any], instance: Any, schema: Any
    ) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, Mapping) and "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(validator_class, {"properties": set_defaults})  # type: ignore[no-untyped-call]


#: Draft 2020-12 validator that also fills in schema defaults (plugin config, rule params).
DefaultingValidator = _extend_with_defaults(Draft202012Validator)
