"""Plugin discovery, enablement, configuration and the typed registries.

Plugins come in through one door: entry points of the group ``brokerkernel.plugins``
(first-party ones are declared in pyproject exactly like a third party's). The entry
point's name is the plugin's name and its ``[plugins.<name>]`` section.

:meth:`PluginManager.load` does the whole startup: read ``plugins.toml``, import the
enabled plugins only (installed is not enabled; the rest are blocked in pluggy),
validate every section against its plugin's schema, register the plugins,
``check_pending()`` (a misspelled hook fails) and collect every ``broker_register_*``
hook into a typed :class:`Registry`, failing on duplicate names. Every problem is
collected and raised together as :class:`~brokerkernel.kernel.config.ConfigError`.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, TypeVar

import pluggy

from brokerkernel.kernel import descriptors as d
from brokerkernel.kernel import hookspecs
from brokerkernel.kernel.config import (
    KERNEL_SCHEMA,
    ConfigError,
    LoadedConfig,
    closed_schema,
    is_enabled,
    plugin_sections,
    read_toml,
    validate_section,
)

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "brokerkernel.plugins"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Registered(Generic[T]):
    """A descriptor and the plugin that registered it."""

    plugin: str
    descriptor: T


@dataclass(slots=True)
class Registry(Generic[T]):
    """Descriptors of one kind by name; ``kind`` is used in error messages."""

    kind: str
    items: dict[str, Registered[T]] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Registered[T]:
        return self.items[name]

    def __contains__(self, name: object) -> bool:
        return name in self.items

    def __iter__(self) -> Iterator[Registered[T]]:
        return iter(self.items.values())

    def __len__(self) -> int:
        return len(self.items)

    def names(self) -> list[str]:
        return sorted(self.items)


# hook name -> (registry attribute, descriptor class, human name)
REGISTRY_HOOKS: dict[str, tuple[str, type[Any], str]] = {
    "broker_register_price_feeds": ("price_feeds", d.PriceFeed, "price feed"),
    "broker_register_quote_adjusters": ("quote_adjusters", d.QuoteAdjuster, "quote adjuster"),
    "broker_register_execution_venues": ("execution_venues", d.ExecutionVenue, "execution venue"),
    "broker_register_risk_rules": ("risk_rules", d.RiskRule, "risk rule"),
    "broker_register_account_rules": ("account_rules", d.AccountRule, "account rule"),
    "broker_register_payment_gateways": ("payment_gateways", d.PaymentGateway, "payment gateway"),
    "broker_register_kyc_providers": ("kyc_providers", d.KycProvider, "KYC provider"),
    "broker_register_messaging_channels": (
        "messaging_channels",
        d.MessagingChannel,
        "messaging channel",
    ),
    "broker_register_prop_rules": ("prop_rules", d.PropRuleSet, "prop rule"),
    "broker_register_routes": ("routes", d.HttpRoutes, "route set"),
}


@dataclass(slots=True)
class Registries:
    """Every descriptor the enabled plugins registered, by kind."""

    price_feeds: Registry[d.PriceFeed] = field(default_factory=lambda: Registry("price feed"))
    quote_adjusters: Registry[d.QuoteAdjuster] = field(
        default_factory=lambda: Registry("quote adjuster")
    )
    execution_venues: Registry[d.ExecutionVenue] = field(
        default_factory=lambda: Registry("execution venue")
    )
    risk_rules: Registry[d.RiskRule] = field(default_factory=lambda: Registry("risk rule"))
    account_rules: Registry[d.AccountRule] = field(default_factory=lambda: Registry("account rule"))
    payment_gateways: Registry[d.PaymentGateway] = field(
        default_factory=lambda: Registry("payment gateway")
    )
    kyc_providers: Registry[d.KycProvider] = field(default_factory=lambda: Registry("KYC provider"))
    messaging_channels: Registry[d.MessagingChannel] = field(
        default_factory=lambda: Registry("messaging channel")
    )
    prop_rules: Registry[d.PropRuleSet] = field(default_factory=lambda: Registry("prop rule"))
    routes: Registry[d.HttpRoutes] = field(default_factory=lambda: Registry("route set"))


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """An installed plugin as the ``brokerkernel plugins`` command shows it."""

    name: str
    target: str
    distribution: str
    version: str
    enabled: bool
    config_schema: Mapping[str, Any] | None
    error: str | None = None


def entry_points_by_name() -> dict[str, list[metadata.EntryPoint]]:
    """Every entry point of the ``brokerkernel.plugins`` group, grouped by name."""
    found: dict[str, list[metadata.EntryPoint]] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def installed_entry_points() -> dict[str, metadata.EntryPoint]:
    """Entry points of the ``brokerkernel.plugins`` group by name (the first of each).

    Two distributions providing one name are refused by :meth:`PluginManager.load`
    when that plugin is enabled (a package must not silently replace another).
    """
    return {name: eps[0] for name, eps in entry_points_by_name().items()}


def _dist_label(ep: metadata.EntryPoint) -> str:
    dist = ep.dist
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def list_plugins(config_path: Path | None) -> list[PluginInfo]:
    """Every installed plugin, whether enabled in ``config_path``, with its schema.

    Plugins that fail to import are listed with ``error`` set instead of raising.
    """
    sections: dict[str, dict[str, Any]] = {}
    if config_path is not None and config_path.exists():
        document, _errors = read_toml(config_path)
        sections, _errors = plugin_sections(document, config_path)
    infos = []
    for name, ep in sorted(installed_entry_points().items()):
        schema: Mapping[str, Any] | None = None
        error = None
        try:
            schema = closed_schema(getattr(ep.load(), "CONFIG_SCHEMA", None))
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        dist = ep.dist
        infos.append(
            PluginInfo(
                name=name,
                target=ep.value,
                distribution=dist.name if dist is not None else "?",
                version=dist.version if dist is not None else "?",
                enabled=name in sections and is_enabled(sections[name]),
                config_schema=schema,
                error=error,
            )
        )
    return infos


class PluginManager:
    """The kernel's pluggy manager plus the validated config and typed registries."""

    def __init__(self, config: LoadedConfig, pm: pluggy.PluginManager, registries: Registries):
        self.config = config
        self.pm = pm
        self.registries = registries
        self.schemas: dict[str, dict[str, Any]] = {}

    @classmethod
    def load(
        cls,
        config_path: Path,
        env: Mapping[str, str] | None = None,
        entry_points: Mapping[str, metadata.EntryPoint] | None = None,
    ) -> PluginManager:
        """Read, validate and load everything; raises ConfigError with every problem."""
        env = os.environ if env is None else env
        conflicts: dict[str, list[metadata.EntryPoint]] = {}
        if entry_points is None:
            grouped = entry_points_by_name()
            available: Mapping[str, metadata.EntryPoint] = {n: eps[0] for n, eps in grouped.items()}
            conflicts = {n: eps for n, eps in grouped.items() if len(eps) > 1}
        else:
            available = entry_points
        document, errors = read_toml(config_path)
        if errors:
            raise ConfigError(errors)
        sections, errors = plugin_sections(document, config_path)
        kernel_section = document.get("kernel", {})
        kernel_config: dict[str, Any] = {}
        if not isinstance(kernel_section, dict):
            errors.append(f"{config_path}: [kernel] must be a table")
        else:
            kernel_config, kernel_errors = validate_section(
                KERNEL_SCHEMA, kernel_section, f"{config_path}: [kernel]", env, kernel_keys=()
            )
            errors += kernel_errors

        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        plugin_configs: dict[str, dict[str, Any]] = {}
        schemas: dict[str, dict[str, Any]] = {}
        disabled = set()
        for name in available:
            if name not in sections or not is_enabled(sections[name]):
                pm.set_blocked(name)
                disabled.add(name)
        for name, section in sections.items():
            if not is_enabled(section):
                continue
            where = f"{config_path}: [plugins.{name}]"
            ep = available.get(name)
            if ep is None:
                errors.append(
                    f"{where}: plugin '{name}' is enabled but not installed "
                    f"(no entry point '{name}' in group {ENTRY_POINT_GROUP})"
                )
                continue
            if name in conflicts:
                providers = " and ".join(_dist_label(e) for e in conflicts[name])
                errors.append(
                    f"{where}: plugin '{name}' is provided by both {providers}; "
                    "uninstall one of them"
                )
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                errors.append(
                    f"{where}: plugin '{name}' ({ep.value}, from {_dist_label(ep)}) "
                    f"failed to import: {type(exc).__name__}: {exc}"
                )
                continue
            plugin_schema = getattr(plugin, "CONFIG_SCHEMA", None)
            if plugin_schema is not None and not isinstance(plugin_schema, Mapping):
                errors.append(
                    f"{where}: the plugin's CONFIG_SCHEMA must be a JSON Schema object, "
                    f"got {type(plugin_schema).__name__}"
                )
            else:
                schema = closed_schema(plugin_schema)
                schemas[name] = schema
                plugin_configs[name], section_errors = validate_section(schema, section, where, env)
                errors += section_errors
            try:
                pm.register(plugin, name=name)
            except Exception as exc:
                reason = "; ".join(str(exc).splitlines())
                errors.append(f"{where}: plugin '{name}' cannot be registered: {reason}")
        # Hooks and registries are checked even when the config has errors, so one run
        # reports every problem.
        unknown_hooks = _unknown_hooks(pm, config_path)
        errors += unknown_hooks
        if not unknown_hooks:
            pm.check_pending()  # pluggy's own check agrees: every hookimpl has a hookspec
        registries = Registries()
        errors += _collect(pm, registries)
        if errors:
            raise ConfigError(errors)
        loaded = LoadedConfig(
            path=config_path,
            kernel=kernel_config,
            plugins=plugin_configs,
            disabled=frozenset(disabled),
        )
        manager = cls(loaded, pm, registries)
        manager.schemas = schemas
        return manager

    @property
    def enabled(self) -> list[str]:
        return sorted(self.config.plugins)

    def plugin_config(self, name: str) -> Mapping[str, Any]:
        return self.config.plugins[name]

    async def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call every implementation of a ``broker_on_*`` hook on its own.

        An implementation that raises (or whose coroutine raises) is logged with its
        plugin name; the others still run.
        """
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                result = impl.function(**args)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("plugin %r failed in %s", impl.plugin_name, hook_name)


def _pending(pm: pluggy.PluginManager) -> Iterator[tuple[str, str]]:
    """(plugin name, hook name) of every non-optional hookimpl without a hookspec.

    The same walk as pluggy's ``check_pending``, which stops at the first one and names
    the plugin object rather than the plugin's name.
    """
    for hook_name in sorted(vars(pm.hook)):
        if hook_name.startswith("_"):
            continue
        caller = getattr(pm.hook, hook_name)
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if not impl.optionalhook:
                yield impl.plugin_name, hook_name


def _unknown_hooks(pm: pluggy.PluginManager, config_path: Path) -> list[str]:
    return [
        f"{config_path}: [plugins.{plugin}]: plugin '{plugin}' implements unknown hook "
        f"'{hook_name}' (not a {hookspecs.PROJECT} hookspec; misspelled?)"
        for plugin, hook_name in sorted(_pending(pm))
    ]


def _collect(pm: pluggy.PluginManager, registries: Registries) -> list[str]:
    errors: list[str] = []
    for hook_name, (attribute, descriptor_type, kind) in REGISTRY_HOOKS.items():
        registry: Registry[Any] = getattr(registries, attribute)
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            try:
                produced = impl.function()
            except Exception as exc:
                errors.append(f"plugin '{impl.plugin_name}': {hook_name} raised {exc!r}")
                continue
            if produced is not None and (
                not isinstance(produced, Iterable)
                or isinstance(produced, str | bytes | Mapping | descriptor_type)
            ):
                errors.append(
                    f"plugin '{impl.plugin_name}': {hook_name} returned {produced!r}, "
                    f"expected a list or iterator of {descriptor_type.__name__}"
                )
                continue
            try:
                items: Iterable[Any] = [] if produced is None else list(produced)
            except Exception as exc:
                errors.append(f"plugin '{impl.plugin_name}': {hook_name} raised {exc!r}")
                continue
            for item in items:
                if not isinstance(item, descriptor_type):
                    errors.append(
                        f"plugin '{impl.plugin_name}': {hook_name} returned {item!r}, "
                        f"expected {descriptor_type.__name__}"
                    )
                elif item.name in registry:
                    errors.append(
                        f"duplicate {kind} name '{item.name}': registered by plugins "
                        f"'{registry[item.name].plugin}' and '{impl.plugin_name}'"
                    )
                else:
                    registry.items[item.name] = Registered(impl.plugin_name, item)
    return errors
