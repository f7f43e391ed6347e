"""The `lectr` command line: the parser, and running a command against the
store through the control plane's `Manager`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from lectr.cli import insights, log, orgs, policy, rules
from lectr.config import ConfigError, Settings, load, masked
from lectr.control.manage import Manager
from lectr.errors import LectrError
from lectr.store import Store, open_store

Handler = Callable[[Manager, argparse.Namespace], Awaitable[None]]
# Commands whose last positional is a key prefix, which may start with '-'.
PREFIX_ARGS = {("keys", "revoke"), ("keys", "rotate")}


async def _migrate(m: Manager, a: argparse.Namespace) -> None:
    applied = await m.store.migrate()
    print(f"applied migrations: {', '.join(map(str, applied))}" if applied else "database is up to date")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lectr", description="Lectr AI gateway and control plane.")
    p.add_argument("--config", help="TOML config file (else LECTR_CONFIG)")
    sub = p.add_subparsers(dest="group", required=True)

    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int)

    sub.add_parser("migrate", help="apply database migrations").set_defaults(run=_migrate)
    sub.add_parser("config", help="print the effective settings (secrets masked)")
    from lectr import devstack  # light at import (no app, no store); it owns its options

    devstack.add_parser(sub)
    from lectr.cli import demo

    demo.add_parser(sub)
    for group in (orgs, rules, policy, insights, log):
        group.add_parsers(sub)
    return p


def _protect_prefix(argv: list[str]) -> list[str]:
    """Put `--` before a key prefix that starts with '-' so argparse takes it
    as the positional it is, not as an option (`keys rotate ORG -abc1234`)."""
    for i in range(len(argv) - 3):
        if (argv[i], argv[i + 1]) in PREFIX_ARGS and "--" not in argv:
            org, prefix = argv[i + 2], argv[i + 3]
            if not org.startswith("-") and prefix.startswith("-") and prefix not in ("-h", "--help"):
                return [*argv[: i + 3], "--", *argv[i + 3 :]]
    return argv


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `lectr` command."""
    args = parser().parse_args(_protect_prefix(list(sys.argv[1:] if argv is None else argv)))
    flags: dict[str, Any] = {}
    if args.group == "serve":
        flags = {"host": args.host, "port": args.port, "workers": args.workers}
    try:
        settings = load(args.config, flags)
    except ConfigError as e:
        sys.exit(f"lectr: {e}")
    if args.group == "serve":
        from lectr.cli.serve import serve

        serve(settings)
        return
    if args.group == "dev-stack":
        from lectr.devstack import main as dev_stack

        dev_stack(args)
        return
    if args.group == "demo":
        from lectr.cli.demo import main as demo

        demo(args)
        return
    if args.group == "config":
        print(json.dumps(masked(settings), indent=2))
        return
    try:
        asyncio.run(_with_store(settings, args.run, args))
    except LectrError as e:
        sys.exit(f"lectr: {e.message}")


async def _with_store(settings: Settings, run: Handler, args: argparse.Namespace) -> None:
    from lectr.insights import Insights

    store: Store = open_store(settings)
    try:
        if run is not _migrate:
            await store.migrate()
        await run(Manager(store, Insights.from_settings(settings, store)), args)
    finally:
        await store.close()
