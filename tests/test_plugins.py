"""Plugin discovery, enablement, hook checks, typed registries and event fan-out.

Third-party discovery is proved through real ``importlib.metadata`` entry points: the
tests write a ``*.dist-info`` directory into ``tmp_path`` and put it on ``sys.path``,
exactly what installing a wheel leaves behind. Smaller cases use tiny fake plugins
whose entry points name modules placed in ``sys.modules`` for the test.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy
import pytest

from brokerkernel.kernel import descriptors as d
from brokerkernel.kernel import hookspecs
from brokerkernel.kernel.clock import MarketClock
from brokerkernel.kernel.config import REDACTED, ConfigError, redact
from brokerkernel.kernel.events import DomainEvent
from brokerkernel.kernel.hookspecs import hookimpl
from brokerkernel.kernel.plugins import (
    ENTRY_POINT_GROUP,
    REGISTRY_HOOKS,
    PluginManager,
    Registries,
    installed_entry_points,
    list_plugins,
)

ACME_SRC = Path(__file__).resolve().parent / "thirdparty" / "acme_risk" / "src"
PROP_RULE_TYPES = (
    "daily_loss",
    "max_loss",
    "profit_target",
    "trading_days",
    "consistency",
    "order_limits",
    "weekend_holding",
    "news_blackout",
)
FIRST_PARTY = {
    "bbook": "brokerkernel.plugins.bbook",
    "margin": "brokerkernel.rules.margin",
    "replay": "brokerkernel.plugins.replay",
    "spread_markup": "brokerkernel.plugins.spread_markup",
    "manual": "brokerkernel.plugins.manual",
    "praxis": "brokerkernel.connectors.praxis",
    "bridgerpay": "brokerkernel.connectors.bridgerpay",
    "stripe": "brokerkernel.connectors.stripe",
    "prop_checkout": "brokerkernel.plugins.prop_checkout",
    "challenges": "brokerkernel.plugins.challenges",
    "webhooks": "brokerkernel.plugins.webhooks",
    "propfirm_api": "brokerkernel.plugins.propfirm_api",
    "fxproptech": "brokerkernel.plugins.fxproptech",
    **{
        name: f"brokerkernel.rules.prop.{name}"
        for name in PROP_RULE_TYPES  # each prop rule type is a plugin of its own
    },
}

WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    """Write ``plugins.toml`` in ``tmp_path`` and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "plugins.toml"
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


def write_dist_info(site: Path, name: str, version: str, entry_points: dict[str, str]) -> Path:
    """Write ``<name>-<version>.dist-info`` (METADATA + entry_points.txt) under ``site``."""
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = "".join(f"{ep_name} = {target}\n" for ep_name, target in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{lines}", encoding="utf-8")
    return dist_info


def on_sys_path(monkeypatch: pytest.MonkeyPatch, *paths: Path, modules: tuple[str, ...]) -> None:
    """Prepend ``paths`` to ``sys.path``; ``modules`` are re-imported and dropped after."""
    for module in modules:
        monkeypatch.delitem(sys.modules, module, raising=False)
    for path in paths:
        monkeypatch.syspath_prepend(str(path))
    importlib.invalidate_caches()


def fake_plugin(
    monkeypatch: pytest.MonkeyPatch, name: str, **attributes: Any
) -> metadata.EntryPoint:
    """An entry point ``name`` whose module (only in ``sys.modules``) has ``attributes``.

    Hook implementations are passed by hook name, e.g.
    ``broker_register_risk_rules=hookimpl(lambda: [...])``.
    """
    module_name = f"_bk_test_plugins_{name}"
    module = types.ModuleType(module_name)
    for attribute, value in attributes.items():
        setattr(module, attribute, value)
    monkeypatch.setitem(sys.modules, module_name, module)
    return metadata.EntryPoint(name=name, value=module_name, group=ENTRY_POINT_GROUP)


def never_built(context: d.PluginContext) -> Any:
    """A descriptor factory for tests where the kernel must not build anything."""
    raise AssertionError("factories are not called at load")


def load_errors(path: Path, **kwargs: Any) -> list[str]:
    """The ConfigError lines ``PluginManager.load`` raises for ``path``."""
    with pytest.raises(ConfigError) as raised:
        PluginManager.load(path, env={}, **kwargs)
    return raised.value.errors


def pre_trade(volume: str) -> d.PreTradeCheck:
    """A healthy account's pre-trade check for ``volume`` lots of EURUSD."""
    return d.PreTradeCheck(
        login=1001,
        group="retail",
        currency="USD",
        leverage=100,
        balance=Decimal("100000"),
        credit=Decimal("0"),
        equity=Decimal("100000"),
        margin_used=Decimal("0"),
        symbol="EURUSD",
        side=1,
        volume=Decimal(volume),
        price=Decimal("1.10000"),
        required_margin=Decimal("1100"),
        open_positions=0,
    )


def event(event_id: str = "evt-1") -> DomainEvent:
    return DomainEvent(
        id=event_id,
        type="order.opened",
        payload={"login": 1001, "volume": "1.00"},
        occurred_at=datetime(2014, 5, 7, 12, 0, tzinfo=UTC),
    )


# ------------------------------------------------------------ third-party discovery


async def test_a_third_party_plugin_is_discovered_through_its_entry_point_metadata(
    tmp_path: Path, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    write_dist_info(site, "acme-risk", "0.1.0", {"acme_risk": "acme_risk"})
    on_sys_path(monkeypatch, site, ACME_SRC, modules=("acme_risk",))
    path = write_config(
        """
        [plugins.acme_risk]
        api_key = "${ACME_API_KEY}"
        """
    )

    # importlib.metadata itself sees the distribution and its entry point.
    (found,) = [
        ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == "acme_risk"
    ]
    assert found.value == "acme_risk"
    assert found.dist is not None and found.dist.name == "acme-risk"
    acme_dist = installed_entry_points()["acme_risk"].dist
    assert acme_dist is not None and acme_dist.version == "0.1.0"

    manager = PluginManager.load(
        path, env={"ACME_API_KEY": "acme-live-key-123"}
    )  # entry_points=None

    plugin = manager.pm.get_plugin("acme_risk")
    assert plugin is not None
    assert plugin.__file__ == str(ACME_SRC / "acme_risk" / "__init__.py")
    assert manager.enabled == ["acme_risk"]
    for name in FIRST_PARTY:  # installed, not enabled here
        assert manager.pm.is_blocked(name), name

    # validated against its schema, closed by the kernel, defaults applied
    assert manager.plugin_config("acme_risk") == {
        "max_volume": 50,
        "api_key": "acme-live-key-123",
    }
    assert manager.schemas["acme_risk"]["additionalProperties"] is False
    assert redact(manager.schemas["acme_risk"], manager.plugin_config("acme_risk")) == {
        "max_volume": 50,
        "api_key": REDACTED,
    }

    # its risk rule is registered under its plugin name and works when built
    assert manager.registries.risk_rules.names() == ["acme_max_volume"]
    registered = manager.registries.risk_rules["acme_max_volume"]
    assert registered.plugin == "acme_risk"
    context = d.PluginContext(
        plugin="acme_risk",
        config=manager.plugin_config("acme_risk"),
        clock=MarketClock(driven=True, start_ms=0),
    )
    rule = registered.descriptor.factory(context)
    assert rule.check(pre_trade("50")) is None
    assert rule.check(pre_trade("49.99")) is None
    assert rule.check(pre_trade("50.01")) == d.Rejection("ACME_MAX_VOLUME")
    assert rule.check(pre_trade("1000")) == d.Rejection("ACME_MAX_VOLUME")

    # domain events reach it
    published = event()
    await manager.notify("broker_on_event", event=published)
    seen_by_acme = plugin.SEEN_EVENTS
    assert seen_by_acme == [published]

    # `brokerkernel plugins` sees the distribution, version and enablement
    (info,) = [i for i in list_plugins(path) if i.name == "acme_risk"]
    assert (info.distribution, info.version, info.enabled, info.target, info.error) == (
        "acme-risk",
        "0.1.0",
        True,
        "acme_risk",
        None,
    )
    assert info.config_schema is not None
    assert info.config_schema["properties"]["api_key"]["writeOnly"] is True
    assert info.config_schema["additionalProperties"] is False


def test_the_third_party_max_volume_comes_from_its_section(
    tmp_path: Path, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    write_dist_info(site, "acme-risk", "0.1.0", {"acme_risk": "acme_risk"})
    on_sys_path(monkeypatch, site, ACME_SRC, modules=("acme_risk",))
    path = write_config("[plugins.acme_risk]\nmax_volume = 2.5\n")
    manager = PluginManager.load(path, env={})
    assert manager.plugin_config("acme_risk") == {"max_volume": 2.5, "api_key": ""}
    context = d.PluginContext("acme_risk", manager.plugin_config("acme_risk"), MarketClock())
    rule = manager.registries.risk_rules["acme_max_volume"].descriptor.factory(context)
    assert rule.check(pre_trade("2.5")) is None
    assert rule.check(pre_trade("2.51")) == d.Rejection("ACME_MAX_VOLUME")
    bad = write_config('[plugins.acme_risk]\nmax_volume = "lots"\napi_key = 12\n')
    assert load_errors(bad) == [
        f"{bad}: [plugins.acme_risk] api_key: invalid secret value (not shown): fails 'type'",
        f"{bad}: [plugins.acme_risk] max_volume: 'lots' is not of type 'number'",
    ]


def test_an_installed_third_party_plugin_that_is_not_enabled_is_blocked(
    tmp_path: Path, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    write_dist_info(site, "acme-risk", "0.1.0", {"acme_risk": "acme_risk"})
    on_sys_path(monkeypatch, site, ACME_SRC, modules=("acme_risk",))
    path = write_config("[plugins.margin]\n")
    manager = PluginManager.load(path, env={})
    assert manager.pm.is_blocked("acme_risk")
    assert "acme_risk" in manager.config.disabled
    assert "acme_max_volume" not in manager.registries.risk_rules
    assert "acme_risk" not in sys.modules  # not enabled: never imported
    (info,) = [i for i in list_plugins(path) if i.name == "acme_risk"]
    assert info.enabled is False


# ------------------------------------------------------------ first-party discovery


def test_first_party_plugins_come_through_the_installed_entry_points(
    write_config: WriteConfig,
) -> None:
    brokerkernel = metadata.distribution("brokerkernel")
    declared = {
        ep.name: ep.value for ep in brokerkernel.entry_points.select(group=ENTRY_POINT_GROUP)
    }
    assert declared == FIRST_PARTY
    installed = installed_entry_points()
    for name, target in FIRST_PARTY.items():
        assert installed[name].value == target
        dist = installed[name].dist
        assert dist is not None
        assert dist.name == "brokerkernel"

    path = write_config(
        """
        [plugins.replay]
        [plugins.bbook]
        [plugins.spread_markup]
        [plugins.margin]
        [plugins.manual]
        [plugins.praxis]
        merchant_id = "m"
        application_key = "a"
        merchant_secret = "s"
        notification_url = "https://broker.test/webhooks/praxis"
        return_url = "https://broker.test/"
        [plugins.bridgerpay]
        user_name = "u"
        password = "p"
        api_key = "k"
        cashier_key = "c"
        [plugins.stripe]
        secret_key = "sk_test_1"
        webhook_secret = "whsec_1"
        publishable_key = "pk_test_1"
        [plugins.challenges]
        [plugins.propfirm_api]
        [plugins.fxproptech]
        [plugins.webhooks]
        [plugins.prop_checkout]
        webhook_secret = "whsec_2"
        [plugins.prop_checkout.tiers.tier_demo]
        plan = "demo-10k"
        amount_cents = 0
        currency = "usd"
        market = "forex"
        asset_class = "forex"
        account_size = 10000
        """
        + "".join(f"[plugins.{name}]\n" for name in PROP_RULE_TYPES)
    )
    manager = PluginManager.load(path, env={})  # entry_points=None: importlib.metadata
    assert manager.enabled == sorted(FIRST_PARTY)
    registries = manager.registries
    assert registries.price_feeds["replay"].plugin == "replay"
    assert registries.price_feeds["replay"].descriptor.drives_clock is True
    assert registries.execution_venues["bbook"].plugin == "bbook"
    assert registries.quote_adjusters["group_spread_markup"].plugin == "spread_markup"
    assert registries.risk_rules["margin"].plugin == "margin"
    assert registries.price_feeds["manual"].descriptor.drives_clock is True
    assert registries.routes["manual_prices"].plugin == "manual"
    assert registries.payment_gateways.names() == ["bridgerpay", "praxis", "stripe"]
    assert registries.prop_rules.names() == sorted(PROP_RULE_TYPES)
    for name in PROP_RULE_TYPES:
        assert registries.prop_rules[name].plugin == name

    infos = {info.name: info for info in list_plugins(path)}
    for name, target in FIRST_PARTY.items():
        info = infos[name]
        assert (info.distribution, info.version, info.target) == ("brokerkernel", "0.1.0", target)
        assert info.enabled is True
        assert info.error is None
        assert info.config_schema is not None
        assert info.config_schema["additionalProperties"] is False


def test_list_plugins_without_a_config_shows_everything_disabled() -> None:
    infos = {info.name: info for info in list_plugins(None)}
    assert set(FIRST_PARTY) <= set(infos)
    assert not any(info.enabled for info in infos.values())


# ------------------------------------------------------------ startup failures


def test_an_enabled_plugin_that_is_not_installed_is_named(write_config: WriteConfig) -> None:
    path = write_config("[plugins.bbook]\n[plugins.acme_fraud]\nthreshold = 3\n")
    assert load_errors(path) == [
        f"{path}: [plugins.acme_fraud]: plugin 'acme_fraud' is enabled but not installed "
        "(no entry point 'acme_fraud' in group brokerkernel.plugins)"
    ]


def test_a_plugin_that_fails_to_import_names_the_plugin_and_its_distribution(
    tmp_path: Path, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    write_dist_info(site, "acme-broken", "2.3.4", {"broken": "acme_broken_plugin"})
    (site / "acme_broken_plugin.py").write_text(
        'raise ImportError("acme_vendor_sdk is required: pip install acme-broken[sdk]")\n',
        encoding="utf-8",
    )
    on_sys_path(monkeypatch, site, modules=("acme_broken_plugin",))
    path = write_config("[plugins.margin]\n[plugins.broken]\n")
    assert load_errors(path) == [
        f"{path}: [plugins.broken]: plugin 'broken' (acme_broken_plugin, from acme-broken "
        "2.3.4) failed to import: ImportError: acme_vendor_sdk is required: "
        "pip install acme-broken[sdk]"
    ]
    # `brokerkernel plugins` still lists it, with the error instead of a schema
    (info,) = [i for i in list_plugins(path) if i.name == "broken"]
    assert (info.distribution, info.version, info.enabled) == ("acme-broken", "2.3.4", True)
    assert info.config_schema is None
    assert info.error == ("ImportError: acme_vendor_sdk is required: pip install acme-broken[sdk]")


def test_a_broken_plugin_that_is_not_enabled_does_not_stop_startup(
    tmp_path: Path, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    write_dist_info(site, "acme-broken", "2.3.4", {"broken": "acme_broken_plugin"})
    (site / "acme_broken_plugin.py").write_text('raise ImportError("nope")\n', encoding="utf-8")
    on_sys_path(monkeypatch, site, modules=("acme_broken_plugin",))
    manager = PluginManager.load(write_config("[plugins.margin]\n"), env={})
    assert manager.pm.is_blocked("broken")


def test_two_distributions_providing_one_enabled_plugin_name_are_refused(
    tmp_path: Path, write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site-packages"
    write_dist_info(site, "evil-bbook", "6.6.6", {"bbook": "evil_bbook"})
    on_sys_path(monkeypatch, site, modules=())
    path = write_config("[plugins.bbook]\n")
    (error,) = load_errors(path)
    assert error.startswith(f"{path}: [plugins.bbook]: plugin 'bbook' is provided by both ")
    assert "evil-bbook 6.6.6" in error and "brokerkernel 0.1.0" in error
    assert error.endswith("; uninstall one of them")
    # not enabled: no conflict to resolve
    PluginManager.load(write_config("[plugins.margin]\n"), env={})


def test_duplicate_descriptor_names_fail_naming_both_plugins(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    @hookimpl
    def broker_register_risk_rules() -> list[d.RiskRule]:
        return [d.RiskRule(name="max_exposure", factory=never_built)]

    @hookimpl
    def broker_register_risk_rules_too() -> Iterator[d.RiskRule]:
        yield d.RiskRule(name="max_exposure", factory=never_built)
        yield d.RiskRule(name="beta_only", factory=never_built)

    entry_points = {
        "alpha": fake_plugin(
            monkeypatch, "alpha", broker_register_risk_rules=broker_register_risk_rules
        ),
        "beta": fake_plugin(
            monkeypatch, "beta", broker_register_risk_rules=broker_register_risk_rules_too
        ),
    }
    path = write_config("[plugins.alpha]\n[plugins.beta]\n")
    assert load_errors(path, entry_points=entry_points) == [
        "duplicate risk rule name 'max_exposure': registered by plugins 'alpha' and 'beta'"
    ]
    # Each on its own is fine.
    only_beta = write_config("[plugins.beta]\n")
    manager = PluginManager.load(only_beta, env={}, entry_points=entry_points)
    assert manager.registries.risk_rules.names() == ["beta_only", "max_exposure"]
    assert {r.plugin for r in manager.registries.risk_rules} == {"beta"}


def test_the_same_name_in_different_registries_is_not_a_duplicate(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    venue = d.ExecutionVenue(name="acme", factory=never_built)
    rule = d.RiskRule(name="acme", factory=never_built)
    entry_points = {
        "acme": fake_plugin(
            monkeypatch,
            "acme",
            broker_register_execution_venues=hookimpl(lambda: [venue]),
            broker_register_risk_rules=hookimpl(lambda: [rule]),
        )
    }
    manager = PluginManager.load(
        write_config("[plugins.acme]\n"), env={}, entry_points=entry_points
    )
    assert manager.registries.execution_venues["acme"].descriptor is venue
    assert manager.registries.risk_rules["acme"].descriptor is rule


def test_a_hook_returning_the_wrong_descriptor_type_is_an_error(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = d.PriceFeed(name="ticks", factory=never_built)
    rule = d.RiskRule(name="one_rule", factory=never_built)
    entry_points = {
        "mixedup": fake_plugin(
            monkeypatch, "mixedup", broker_register_risk_rules=hookimpl(lambda: [feed])
        ),
        "single": fake_plugin(
            monkeypatch, "single", broker_register_risk_rules=hookimpl(lambda: rule)
        ),
        "texty": fake_plugin(
            monkeypatch, "texty", broker_register_execution_venues=hookimpl(lambda: "bbook")
        ),
    }
    path = write_config("[plugins.mixedup]\n[plugins.single]\n[plugins.texty]\n")
    assert load_errors(path, entry_points=entry_points) == [
        "plugin 'texty': broker_register_execution_venues returned 'bbook', "
        "expected a list or iterator of ExecutionVenue",
        f"plugin 'mixedup': broker_register_risk_rules returned {feed!r}, expected RiskRule",
        f"plugin 'single': broker_register_risk_rules returned {rule!r}, "
        "expected a list or iterator of RiskRule",
    ]


def test_a_hook_that_raises_is_an_error_naming_the_plugin(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode() -> list[d.PriceFeed]:
        raise RuntimeError("no credentials")

    entry_points = {
        "flaky": fake_plugin(monkeypatch, "flaky", broker_register_price_feeds=hookimpl(explode))
    }
    path = write_config("[plugins.flaky]\n")
    assert load_errors(path, entry_points=entry_points) == [
        "plugin 'flaky': broker_register_price_feeds raised RuntimeError('no credentials')"
    ]


def test_a_misspelled_hook_fails_at_load(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    @hookimpl
    def broker_register_price_feed() -> list[d.PriceFeed]:
        return []

    entry_points = {
        "typo": fake_plugin(
            monkeypatch, "typo", broker_register_price_feed=broker_register_price_feed
        )
    }
    path = write_config("[plugins.typo]\n")
    assert load_errors(path, entry_points=entry_points) == [
        f"{path}: [plugins.typo]: plugin 'typo' implements unknown hook "
        "'broker_register_price_feed' (not a brokerkernel hookspec; misspelled?)"
    ]


def test_a_misspelled_hook_is_reported_together_with_config_errors(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry_points = {
        "typo": fake_plugin(monkeypatch, "typo", broker_on_events=hookimpl(lambda event: None)),
        "margin": metadata.EntryPoint("margin", FIRST_PARTY["margin"], ENTRY_POINT_GROUP),
    }
    path = write_config("[plugins.typo]\n[plugins.margin]\nmin_margin_level = -5\n")
    assert load_errors(path, entry_points=entry_points) == [
        f"{path}: [plugins.margin] min_margin_level: -5 is less than the minimum of 0",
        f"{path}: [plugins.typo]: plugin 'typo' implements unknown hook "
        "'broker_on_events' (not a brokerkernel hookspec; misspelled?)",
    ]


def test_an_optional_unknown_hook_is_allowed(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    optional = pluggy.HookimplMarker(hookspecs.PROJECT)(optionalhook=True)
    entry_points = {
        "future": fake_plugin(
            monkeypatch, "future", broker_on_margin_call=optional(lambda event: None)
        )
    }
    manager = PluginManager.load(
        write_config("[plugins.future]\n"), env={}, entry_points=entry_points
    )
    assert manager.enabled == ["future"]


def test_a_hookimpl_with_arguments_the_spec_lacks_cannot_be_registered(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broker_on_event(event: Any, tenant: str) -> None:
        return None

    entry_points = {
        "greedy": fake_plugin(monkeypatch, "greedy", broker_on_event=hookimpl(broker_on_event))
    }
    path = write_config("[plugins.greedy]\n")
    (error,) = load_errors(path, entry_points=entry_points)
    assert error.startswith(f"{path}: [plugins.greedy]: plugin 'greedy' cannot be registered: ")
    assert "{'tenant'}" in error
    assert "\n" not in error


# ------------------------------------------------------------ event fan-out


def make_event_plugins(
    monkeypatch: pytest.MonkeyPatch, seen: list[tuple[str, str]]
) -> dict[str, metadata.EntryPoint]:
    """Four ``broker_on_event`` plugins: sync/async, failing/recording."""

    def sync_fails(event: DomainEvent) -> None:
        seen.append(("sync_fails", event.id))
        raise RuntimeError("sync handler broke")

    async def async_fails(event: DomainEvent) -> None:
        seen.append(("async_fails", event.id))
        raise RuntimeError("async handler broke")

    def sync_records(event: DomainEvent) -> None:
        seen.append(("sync_records", event.id))

    async def async_records(event: DomainEvent) -> None:
        seen.append(("async_records", event.id))

    handlers = {
        "a_sync_fails": sync_fails,
        "b_async_fails": async_fails,
        "c_sync_records": sync_records,
        "d_async_records": async_records,
    }
    return {
        name: fake_plugin(monkeypatch, name, broker_on_event=hookimpl(handler))
        for name, handler in handlers.items()
    }


async def test_notify_isolates_failing_plugins_sync_and_async(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, str]] = []
    entry_points = make_event_plugins(monkeypatch, seen)
    path = write_config("".join(f"[plugins.{name}]\n" for name in entry_points))
    manager = PluginManager.load(path, env={}, entry_points=entry_points)

    with caplog.at_level(logging.ERROR, logger="brokerkernel.kernel.plugins"):
        await manager.notify("broker_on_event", event=event("evt-7"))

    assert sorted(seen) == [
        ("async_fails", "evt-7"),
        ("async_records", "evt-7"),
        ("sync_fails", "evt-7"),
        ("sync_records", "evt-7"),
    ]
    failures = sorted(
        (record.getMessage(), str(record.exc_info[1]) if record.exc_info else "")
        for record in caplog.records
    )
    assert failures == [
        ("plugin 'a_sync_fails' failed in broker_on_event", "sync handler broke"),
        ("plugin 'b_async_fails' failed in broker_on_event", "async handler broke"),
    ]


async def test_notify_reaches_plugins_registered_after_a_failing_one(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever order pluggy keeps, the recording plugins run before and after failures."""
    seen: list[tuple[str, str]] = []
    entry_points = make_event_plugins(monkeypatch, seen)
    for order in (list(entry_points), list(reversed(entry_points))):
        seen.clear()
        path = write_config("".join(f"[plugins.{name}]\n" for name in order))
        manager = PluginManager.load(path, env={}, entry_points=entry_points)
        await manager.notify("broker_on_event", event=event("evt-8"))
        assert {name for name, _ in seen} == {
            "sync_fails",
            "async_fails",
            "sync_records",
            "async_records",
        }


async def test_notify_skips_blocked_plugins(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str]] = []
    entry_points = make_event_plugins(monkeypatch, seen)
    path = write_config("[plugins.c_sync_records]\n[plugins.d_async_records]\nenabled = false\n")
    manager = PluginManager.load(path, env={}, entry_points=entry_points)
    await manager.notify("broker_on_event", event=event("evt-9"))
    assert seen == [("sync_records", "evt-9")]


# ------------------------------------------------------------ hookspec meta-tests


def hookspec_functions() -> dict[str, Callable[..., Any]]:
    """Every function in kernel/hookspecs.py marked with ``@hookspec``."""
    marker = f"{hookspecs.PROJECT}_spec"
    return {
        name: function
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if hasattr(function, marker)
    }


def test_there_are_hookspecs_of_both_shapes() -> None:
    names = hookspec_functions()
    assert any(name.startswith("broker_register_") for name in names)
    assert {"broker_on_startup", "broker_on_shutdown", "broker_on_event"} <= set(names)


@pytest.mark.parametrize("name", sorted(hookspec_functions()))
def test_every_hookspec_is_documented_prefixed_and_of_one_of_the_two_shapes(name: str) -> None:
    function = hookspec_functions()[name]
    assert inspect.getdoc(function), f"{name} has no docstring"
    assert name.startswith("broker_"), name
    parameters = inspect.signature(function).parameters
    if name.startswith("broker_register_"):
        assert name in REGISTRY_HOOKS, f"{name} has no registry in kernel.plugins.REGISTRY_HOOKS"
        attribute, descriptor_type, kind = REGISTRY_HOOKS[name]
        assert not parameters, f"{name} must take no arguments"
        # `from __future__ import annotations`: annotations are strings
        assert inspect.signature(function).return_annotation == (
            f"Iterable[{descriptor_type.__name__}]"
        )
        assert getattr(d, descriptor_type.__name__) is descriptor_type
        registry = getattr(Registries(), attribute)
        assert registry.kind == kind
    else:
        assert name.startswith("broker_on_"), f"{name} is neither broker_register_* nor broker_on_*"
        assert parameters, f"{name} must receive what happened"


def test_every_registry_hook_has_a_hookspec_and_no_hook_is_firstresult() -> None:
    specs = hookspec_functions()
    assert set(REGISTRY_HOOKS) <= set(specs)
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in specs:
        caller = getattr(pm.hook, name)
        assert caller.spec is not None
        assert caller.spec.opts.get("firstresult") is False, name
    # one registry field per registry hook, and nothing else
    assert sorted(Registries.__dataclass_fields__) == sorted(
        a for a, _, _ in REGISTRY_HOOKS.values()
    )
