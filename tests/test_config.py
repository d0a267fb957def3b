"""``plugins.toml`` validation: every error at once, ``${ENV}`` references, defaults,
closed plugin schemas, secret redaction and the kernel-owned ``enabled`` key.

Plugin sections are validated through :meth:`PluginManager.load` against the real
first-party plugins (installed entry points) or tiny fake plugins whose entry points
name modules placed in ``sys.modules`` for the test.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from brokerkernel.kernel.config import (
    KERNEL_SCHEMA,
    REDACTED,
    ConfigError,
    closed_schema,
    read_toml,
    redact,
    validate_section,
)
from brokerkernel.kernel.plugins import ENTRY_POINT_GROUP, PluginManager
from brokerkernel.plugins.replay.config import config_defaults

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write ``plugins.toml`` in ``tmp_path`` and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "plugins.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def load_errors(path: Path, env: dict[str, str] | None = None, **kwargs: Any) -> list[str]:
    """The ConfigError lines ``PluginManager.load`` raises for ``path``."""
    with pytest.raises(ConfigError) as raised:
        PluginManager.load(path, env={} if env is None else env, **kwargs)
    assert str(raised.value) == "\n".join(raised.value.errors)
    return raised.value.errors


def fake_plugin(
    monkeypatch: pytest.MonkeyPatch, name: str, **attributes: Any
) -> metadata.EntryPoint:
    """An entry point ``name`` whose module (only in ``sys.modules``) has ``attributes``."""
    module_name = f"_bk_test_config_{name}"
    module = types.ModuleType(module_name)
    for attribute, value in attributes.items():
        setattr(module, attribute, value)
    monkeypatch.setitem(sys.modules, module_name, module)
    return metadata.EntryPoint(name=name, value=module_name, group=ENTRY_POINT_GROUP)


# ------------------------------------------------------------------ all errors at once


def test_every_error_is_reported_at_once_naming_file_section_and_key(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        """
colour = "blue"

[kernel]
fx_conversion = "ask"

[plugins.margin]
min_margin_level = 50
max_lots = 5

[plugins.replay]
speed = "fast"
"""
    )
    assert load_errors(path) == [
        f"{path}: unknown top-level key 'colour' (expected [kernel] and [plugins.<name>])",
        f"{path}: [kernel] fx_conversion: 'ask' is not one of ['mid', 'bid_ask']",
        f"{path}: [plugins.margin] max_lots: Additional properties are not allowed "
        "('max_lots' was unexpected)",
        f"{path}: [plugins.replay] speed: 'fast' is not valid under any of the given schemas",
    ]


def test_each_unknown_key_of_a_section_gets_its_own_line(write_config: WriteConfig) -> None:
    path = write_config(
        """
[kernel]
execution_venu = "bbook"

[plugins.margin]
min_margin_levl = 50
max_lots = 5
"""
    )
    assert load_errors(path) == [
        f"{path}: [kernel] execution_venu: Additional properties are not allowed "
        "('execution_venu' was unexpected)",
        f"{path}: [plugins.margin] max_lots: Additional properties are not allowed "
        "('max_lots' was unexpected)",
        f"{path}: [plugins.margin] min_margin_levl: Additional properties are not allowed "
        "('min_margin_levl' was unexpected)",
    ]


def test_nested_errors_name_the_dotted_key(write_config: WriteConfig) -> None:
    path = write_config(
        """
[kernel]
order_request_ttl_s = 0
cors_origins = ["https://a.example", 7]

[plugins.replay]
days = 1.5
symbols = ["EURUSD", "EURGBP"]
"""
    )
    assert load_errors(path) == [
        f"{path}: [kernel] cors_origins.1: 7 is not of type 'string'",
        f"{path}: [kernel] order_request_ttl_s: 0 is less than the minimum of 1",
        f"{path}: [plugins.replay] days: 1.5 is not of type 'integer'",
        f"{path}: [plugins.replay] symbols.1: 'EURGBP' is not one of "
        "['EURUSD', 'XAUUSD', 'GBPUSD', 'USDJPY', 'BTCUSD']",
    ]


def test_config_error_str_is_one_line_per_error() -> None:
    error = ConfigError(["a.toml: first", "a.toml: second"])
    assert error.errors == ["a.toml: first", "a.toml: second"]
    assert str(error) == "a.toml: first\na.toml: second"


# ------------------------------------------------------------------ file problems


def test_toml_syntax_error_is_reported_with_the_file(write_config: WriteConfig) -> None:
    path = write_config("[kernel]\nclock = \n[plugins.bbook]\n")
    assert load_errors(path) == [f"{path}: invalid TOML: Invalid value (at line 2, column 9)"]


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    assert load_errors(path) == [f"{path}: file not found"]


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "plugins.toml"
    path.write_bytes(b'[kernel]\nclock = "caf\xe9"\n')
    assert read_toml(path) == (
        {},
        [f"{path}: invalid TOML: not UTF-8 text (byte 0xe9 at offset 21)"],
    )


def test_a_directory_instead_of_a_file_is_a_config_error(tmp_path: Path) -> None:
    document, errors = read_toml(tmp_path)
    assert document == {}
    assert errors == [f"{tmp_path}: cannot read: Is a directory"]


def test_plugins_and_sections_must_be_tables(write_config: WriteConfig) -> None:
    path = write_config('kernel = "fast"\n[plugins]\nbbook = true\n')
    assert load_errors(path) == [
        f"{path}: [plugins.bbook] must be a table",
        f"{path}: [kernel] must be a table",
    ]


# ------------------------------------------------------------------ ${ENV} references


def test_env_references_are_resolved_with_and_without_defaults(write_config: WriteConfig) -> None:
    path = write_config(
        """
[kernel]
jwt_secret = "${BK_TEST_JWT}"
execution_venue = "${BK_TEST_VENUE:-bbook}"
clock = "${BK_TEST_CLOCK:-wall}"

[plugins.replay]
data_dir = "${BK_TEST_DATA}/market"
symbols = ["${BK_TEST_SYMBOL:-EURUSD}"]
"""
    )
    env = {"BK_TEST_JWT": "jwt-from-env", "BK_TEST_CLOCK": "replay", "BK_TEST_DATA": "/srv"}
    manager = PluginManager.load(path, env=env)
    assert manager.config.kernel["jwt_secret"] == "jwt-from-env"
    assert manager.config.kernel["execution_venue"] == "bbook"  # default used
    assert manager.config.kernel["clock"] == "replay"  # set variable wins over default
    assert manager.plugin_config("replay")["data_dir"] == "/srv/market"
    assert manager.plugin_config("replay")["symbols"] == ["EURUSD"]


def test_an_empty_default_resolves_to_an_empty_string(write_config: WriteConfig) -> None:
    path = write_config('[kernel]\njwt_secret = "${BK_TEST_UNSET:-}"\n')
    manager = PluginManager.load(path, env={})
    assert manager.config.kernel["jwt_secret"] == ""


def test_a_missing_env_variable_is_an_error_naming_the_key(write_config: WriteConfig) -> None:
    path = write_config(
        """
[kernel]
jwt_secret = "${BK_TEST_JWT}"

[plugins.replay]
data_dir = "${BK_TEST_DATA}/market"
"""
    )
    assert load_errors(path, env={"BK_TEST_OTHER": "x"}) == [
        f"{path}: [kernel] jwt_secret: environment variable ${{BK_TEST_JWT}} is not set",
        f"{path}: [plugins.replay] data_dir: environment variable ${{BK_TEST_DATA}} is not set",
    ]


def test_a_missing_env_variable_in_a_list_names_the_index() -> None:
    schema = closed_schema({"properties": {"hosts": {"type": "array"}}})
    _, errors = validate_section(schema, {"hosts": ["a", "${BK_HOST}"]}, "f.toml: [x]", {})
    assert errors == ["f.toml: [x] hosts.1: environment variable ${BK_HOST} is not set"]


def test_the_process_environment_is_used_when_no_env_is_given(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BK_TEST_PROCESS_VENUE", "lp_bridge")
    path = write_config('[kernel]\nexecution_venue = "${BK_TEST_PROCESS_VENUE}"\n')
    assert PluginManager.load(path).config.kernel["execution_venue"] == "lp_bridge"


# ------------------------------------------------------------------ defaults


def test_defaults_are_applied_to_kernel_and_plugin_sections(write_config: WriteConfig) -> None:
    path = write_config("[plugins.replay]\n[plugins.margin]\n")
    manager = PluginManager.load(path, env={})
    assert manager.config.kernel == {
        key: prop["default"] for key, prop in KERNEL_SCHEMA["properties"].items()
    }
    assert manager.config.kernel["execution_venue"] == "bbook"
    assert manager.config.kernel["fx_conversion"] == "mid"
    assert manager.config.kernel["order_request_ttl_s"] == 300
    assert manager.plugin_config("replay") == config_defaults()
    assert manager.plugin_config("replay")["speed"] == 1
    assert manager.plugin_config("replay")["loop"] is False
    assert manager.plugin_config("margin") == {"min_margin_level": None}


def test_defaults_do_not_override_given_values_and_are_not_shared() -> None:
    schema = closed_schema(
        {"properties": {"tags": {"type": "array", "default": []}, "n": {"default": 1}}}
    )
    first, _ = validate_section(schema, {"n": 5}, "f.toml: [x]", {})
    second, _ = validate_section(schema, {}, "f.toml: [x]", {})
    assert first == {"tags": [], "n": 5}
    first["tags"].append("mutated")
    assert second == {"tags": [], "n": 1}
    assert schema["properties"]["tags"]["default"] == []


# ------------------------------------------------------------------ plugin schemas


def test_closed_schema_injects_additional_properties_false() -> None:
    schema = {"type": "object", "properties": {"limit": {"type": "number"}}}
    closed = closed_schema(schema)
    assert closed == {
        "type": "object",
        "properties": {"limit": {"type": "number"}},
        "additionalProperties": False,
    }
    assert "additionalProperties" not in schema  # the plugin's own dict is untouched
    assert closed_schema(None) == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }


def test_a_plugin_schema_without_additional_properties_rejects_unknown_keys(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_schema = {"type": "object", "properties": {"limit": {"type": "number", "default": 3}}}
    entry_points = {"open": fake_plugin(monkeypatch, "open", CONFIG_SCHEMA=open_schema)}
    path = write_config("[plugins.open]\nlimit = 7\nlimt = 8\n")
    assert load_errors(path, entry_points=entry_points) == [
        f"{path}: [plugins.open] limt: Additional properties are not allowed "
        "('limt' was unexpected)"
    ]
    good = write_config("[plugins.open]\n")
    manager = PluginManager.load(good, env={}, entry_points=entry_points)
    assert manager.plugin_config("open") == {"limit": 3}
    assert manager.schemas["open"]["additionalProperties"] is False


def test_a_plugin_without_config_schema_accepts_only_an_empty_section(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_points = {"bare": fake_plugin(monkeypatch, "bare")}
    path = write_config("[plugins.bare]\nanything = 1\n")
    assert load_errors(path, entry_points=entry_points) == [
        f"{path}: [plugins.bare] anything: Additional properties are not allowed "
        "('anything' was unexpected)"
    ]


def test_an_invalid_plugin_schema_is_reported(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = {"type": "object", "properties": {"limit": {"type": "decimal"}}}
    entry_points = {"badschema": fake_plugin(monkeypatch, "badschema", CONFIG_SCHEMA=bad)}
    path = write_config("[plugins.badschema]\n")
    assert load_errors(path, entry_points=entry_points) == [
        f"{path}: [plugins.badschema]: the plugin's CONFIG_SCHEMA is not a valid JSON Schema: "
        "'decimal' is not valid under any of the given schemas"
    ]


def test_a_config_schema_that_is_not_an_object_is_reported_with_the_other_errors(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_points = {
        "listy": fake_plugin(monkeypatch, "listy", CONFIG_SCHEMA=["limit"]),
        "margin": metadata.EntryPoint("margin", "brokerkernel.rules.margin", ENTRY_POINT_GROUP),
    }
    path = write_config("[plugins.listy]\n[plugins.margin]\nmin_margin_level = -1\n")
    assert load_errors(path, entry_points=entry_points) == [
        f"{path}: [plugins.listy]: the plugin's CONFIG_SCHEMA must be a JSON Schema object, "
        "got list",
        f"{path}: [plugins.margin] min_margin_level: -1 is less than the minimum of 0",
    ]


# ------------------------------------------------------------------ secrets


SECRET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "api_key": {"type": "string", "writeOnly": True},
        "account": {"type": "string"},
        "webhook": {
            "type": "object",
            "properties": {
                "url": {"type": "string"},
                "signing_secret": {"type": "string", "writeOnly": True},
            },
        },
        "endpoints": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"host": {"type": "string"}, "token": {"writeOnly": True}},
            },
        },
        "credentials": {"type": "object", "writeOnly": True},
    },
}


def test_redact_replaces_write_only_values_including_nested_ones() -> None:
    value = {
        "api_key": "sk_live_123",
        "account": "ACME-1",
        "webhook": {"url": "https://hooks.example/x", "signing_secret": "whsec_456"},
        "endpoints": [{"host": "a.example", "token": "t-1"}, {"host": "b.example", "token": 9}],
        "credentials": {"user": "u", "password": "p"},
        "unknown": "kept",
    }
    assert redact(SECRET_SCHEMA, value) == {
        "api_key": REDACTED,
        "account": "ACME-1",
        "webhook": {"url": "https://hooks.example/x", "signing_secret": REDACTED},
        "endpoints": [
            {"host": "a.example", "token": REDACTED},
            {"host": "b.example", "token": REDACTED},
        ],
        "credentials": REDACTED,
        "unknown": "kept",
    }
    assert value["api_key"] == "sk_live_123"  # the input is not modified
    assert REDACTED == "***"


def test_redact_shows_empty_and_missing_secrets_as_they_are() -> None:
    value = {"api_key": "", "webhook": {"signing_secret": None}, "account": ""}
    assert redact(SECRET_SCHEMA, value) == {
        "api_key": "",
        "webhook": {"signing_secret": None},
        "account": "",
    }


def test_redact_tolerates_boolean_subschemas_and_non_mapping_values() -> None:
    schema = {"properties": {"anything": True, "secret": {"writeOnly": True}}}
    assert redact(schema, {"anything": {"nested": 1}, "secret": "x"}) == {
        "anything": {"nested": 1},
        "secret": REDACTED,
    }
    assert redact(schema, "plain") == "plain"


def test_kernel_jwt_secret_is_write_only_and_redacted(write_config: WriteConfig) -> None:
    path = write_config('[kernel]\njwt_secret = "${BK_TEST_JWT}"\n')
    manager = PluginManager.load(path, env={"BK_TEST_JWT": "super-secret-signing-key"})
    shown = redact(KERNEL_SCHEMA, manager.config.kernel)
    assert shown["jwt_secret"] == REDACTED
    assert "super-secret-signing-key" not in repr(shown)


def test_validation_errors_never_show_a_secret_value() -> None:
    schema = closed_schema(
        {
            "properties": {
                "api_key": {"type": "string", "writeOnly": True, "pattern": "^sk_"},
                "pin": {"type": "string", "writeOnly": True},
                "vault": {
                    "type": "object",
                    "writeOnly": True,
                    "properties": {"token": {"type": "string"}},
                },
                "account": {"type": "string", "pattern": "^AC"},
            }
        }
    )
    section = {
        "api_key": "${BK_KEY}",
        "pin": 123456,
        "vault": {"token": 998877},
        "account": "XY-1",
    }
    _, errors = validate_section(schema, section, "f.toml: [plugins.acme]", {"BK_KEY": "hunter2"})
    assert errors == [
        "f.toml: [plugins.acme] account: 'XY-1' does not match '^AC'",
        "f.toml: [plugins.acme] api_key: invalid secret value (not shown): fails 'pattern'",
        "f.toml: [plugins.acme] pin: invalid secret value (not shown): fails 'type'",
        "f.toml: [plugins.acme] vault.token: invalid secret value (not shown): fails 'type'",
    ]
    assert not any("hunter2" in e or "123456" in e or "998877" in e for e in errors)


# ------------------------------------------------------------------ enabled


def test_enabled_false_keeps_the_plugin_blocked_and_skips_its_section(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        """
[plugins.bbook]

[plugins.replay]
enabled = false
speed = "not even a number"
bogus = 1
"""
    )
    manager = PluginManager.load(path, env={})
    assert manager.enabled == ["bbook"]
    assert manager.pm.is_blocked("replay")
    assert manager.pm.get_plugin("replay") is None
    assert not manager.pm.is_blocked("bbook")
    assert "replay" in manager.config.disabled
    assert "replay" not in manager.config.plugins
    assert "replay" not in manager.registries.price_feeds


def test_installed_but_not_configured_plugins_are_blocked(write_config: WriteConfig) -> None:
    path = write_config("[plugins.margin]\n")
    manager = PluginManager.load(path, env={})
    assert manager.enabled == ["margin"]
    for name in ("bbook", "replay", "spread_markup"):
        assert manager.pm.is_blocked(name), name
        assert name in manager.config.disabled
    assert manager.registries.risk_rules.names() == ["margin"]
    assert len(manager.registries.execution_venues) == 0


def test_enabled_must_be_a_boolean(write_config: WriteConfig) -> None:
    path = write_config('[plugins.bbook]\nenabled = "yes"\n')
    assert load_errors(path) == [f"{path}: [plugins.bbook] enabled: must be true or false"]


def test_enabled_true_is_accepted_and_not_passed_to_the_plugin(write_config: WriteConfig) -> None:
    path = write_config("[plugins.margin]\nenabled = true\nmin_margin_level = 100\n")
    manager = PluginManager.load(path, env={})
    assert manager.plugin_config("margin") == {"min_margin_level": 100}


def test_enabled_is_not_a_kernel_setting(write_config: WriteConfig) -> None:
    path = write_config("[kernel]\nenabled = false\n")
    assert load_errors(path) == [
        f"{path}: [kernel] enabled: Additional properties are not allowed "
        "('enabled' was unexpected)"
    ]
