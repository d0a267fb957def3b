"""The ``brokerkernel`` command.

    brokerkernel serve [--host H] [--port P] [--workers N] [--config plugins.toml]
    brokerkernel db upgrade [REVISION] | db downgrade REVISION | db current
    brokerkernel users create-admin --email E --password P
    brokerkernel plugins [--config plugins.toml]
    brokerkernel config check [--config plugins.toml]
    brokerkernel simulate [--accounts N] [--day YYYY-MM-DD] [--symbols A,B]
    brokerkernel ledger check [--login N]

Environment: ``DATABASE_URL`` (default SQLite under ./var/), ``REDIS_URL`` (optional).
Exit codes: 0 success, 1 a failed check or invariant, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from brokerkernel.kernel.config import ConfigError
from brokerkernel.kernel.plugins import PluginManager, list_plugins
from brokerkernel.kernel.runtime import Settings


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, default=Path("plugins.toml"), help="plugins.toml to use"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="brokerkernel", description="Broker kernel")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port (N > 1 needs PostgreSQL and Redis)",
    )
    _config_arg(serve)

    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="migrate to a revision (default head)")
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = db_sub.add_parser("downgrade", help="migrate down to a revision")
    downgrade.add_argument("revision")
    db_sub.add_parser("current", help="print the current revision")

    users = sub.add_parser("users", help="staff users")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    admin = users_sub.add_parser("create-admin", help="bootstrap the first staff user (role admin)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.add_argument("--first-name", default="Admin")
    admin.add_argument("--last-name", default="")

    plugins = sub.add_parser("plugins", help="installed plugins and their config schemas")
    _config_arg(plugins)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate plugins.toml; exit 2 listing every error")
    _config_arg(check)

    ledger = sub.add_parser("ledger", help="the financial ledger")
    ledger_sub = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_check = ledger_sub.add_parser(
        "check", help="compare balances with their ledgers; exit 1 listing any drift"
    )
    ledger_check.add_argument("--login", type=int, default=None, help="one account only")

    simulate = sub.add_parser("simulate", help="replay a real trading day with simulated traders")
    simulate.add_argument("--accounts", type=int, default=50)
    simulate.add_argument("--day", default="2014-05-07")
    simulate.add_argument("--symbols", default="EURUSD,XAUUSD")
    simulate.add_argument(
        "--step-seconds", type=int, default=60, help="market seconds between trader decisions"
    )
    simulate.add_argument("--data-dir", default="../shared/data/market")
    simulate.add_argument(
        "--database-url", default=None, help="default: a fresh SQLite file under ./var/"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(_dispatch(args) or 0)
    except ConfigError as exc:
        print("configuration errors:", file=sys.stderr)
        for line in exc.errors:
            print(f"  - {line}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "db":
        from brokerkernel.kernel.storage import migrate

        url = Settings.from_env(Path("plugins.toml")).database_url
        if args.db_command == "upgrade":
            migrate.upgrade(url, args.revision)
        elif args.db_command == "downgrade":
            migrate.downgrade(url, args.revision)
        else:
            print(migrate.current(url) or "(empty database)")
        return 0
    if args.command == "users":
        return asyncio.run(_create_admin(args))
    if args.command == "plugins":
        return _plugins(args.config)
    if args.command == "config":
        manager = PluginManager.load(args.config)
        enabled = ", ".join(manager.enabled)
        print(f"{args.config}: ok ({len(manager.enabled)} plugins enabled: {enabled})")
        return 0
    if args.command == "ledger":
        return asyncio.run(_ledger_check(args.login))
    from brokerkernel.kernel.simulation import run_simulation

    return int(run_simulation(args))


def _serve(args: argparse.Namespace) -> int:
    from brokerkernel.kernel.serve import serve

    return serve(args.host, args.port, args.config, args.workers)


async def _create_admin(args: argparse.Namespace) -> int:
    from brokerkernel.kernel.staff import StaffError, create_staff_user
    from brokerkernel.kernel.storage.db import Database

    db = Database(Settings.from_env(Path("plugins.toml")).database_url)
    try:
        user = await create_staff_user(
            db, args.email, args.password, first_name=args.first_name, last_name=args.last_name
        )
    except StaffError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        await db.dispose()
    print(f"created admin {user.email}")
    return 0


async def _ledger_check(login: int | None) -> int:
    from brokerkernel.kernel.money.reports import check_ledger
    from brokerkernel.kernel.storage.db import Database

    db = Database(Settings.from_env(Path("plugins.toml")).database_url)
    try:
        report = await check_ledger(db, login)
    finally:
        await db.dispose()
    for line in report.drift:
        print(f"drift: {line}")
    verdict = f"{len(report.drift)} drift findings" if report.drift else "no drift"
    print(
        f"{report.accounts} accounts, {report.events} ledger rows, "
        f"{report.transactions} transactions: {verdict}"
    )
    return 1 if report.drift else 0


def _plugins(config: Path) -> int:
    infos = list_plugins(config)
    for info in infos:
        state = "enabled" if info.enabled else "disabled"
        print(f"{info.name:<16} {state:<9} {info.distribution} {info.version}  ({info.target})")
        if info.error:
            print(f"    import error: {info.error}")
        elif info.config_schema is not None:
            print("    config schema: " + json.dumps(info.config_schema, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
