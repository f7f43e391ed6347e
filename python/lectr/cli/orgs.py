"""`lectr orgs` and `lectr keys`: orgs, their Azure settings and their keys."""

from __future__ import annotations

import argparse
from typing import Any

from lectr.cli.tables import table, when
from lectr.control.manage import Manager


async def orgs_create(m: Manager, a: argparse.Namespace) -> None:
    org, key = await m.create_org(a.name)
    print(f"created org {org.name} ({org.id})")
    print(f"key prefix {key.prefix}; store the key now, it is shown only once:")
    print(key.key)


async def orgs_list(m: Manager, a: argparse.Namespace) -> None:
    table(
        [
            [
                o.id,
                o.name,
                "disabled" if o.disabled else "active",
                o.azure_endpoint or "-",
                when(o.created_at),
            ]
            for o in await m.store.list_orgs()
        ],
        ["ID", "NAME", "STATE", "AZURE ENDPOINT", "CREATED (UTC)"],
    )


async def orgs_disable(m: Manager, a: argparse.Namespace) -> None:
    org = await m.set_org_disabled(a.org, a.command == "disable")
    print(f"org {org.name} {'disabled' if org.disabled else 'enabled'}")


async def orgs_azure(m: Manager, a: argparse.Namespace) -> None:
    org = await m.set_org_azure(a.org, a.endpoint, a.api_version)
    endpoint, version = org.azure_endpoint or "-", org.azure_api_version or "-"
    print(f"org {org.name}: azure endpoint {endpoint}, api-version {version}")


async def keys_create(m: Manager, a: argparse.Namespace) -> None:
    org, key = await m.create_key(a.org)
    print(f"new key for {org.name}, prefix {key.prefix}; it is shown only once:")
    print(key.key)


async def keys_list(m: Manager, a: argparse.Namespace) -> None:
    table(
        [
            [
                f"lc_key_{k.prefix}...",
                "revoked" if k.revoked_at else "active",
                when(k.created_at),
                when(k.revoked_at),
            ]
            for k in await m.list_keys(a.org)
        ],
        ["KEY", "STATE", "CREATED (UTC)", "REVOKED (UTC)"],
    )


async def keys_revoke(m: Manager, a: argparse.Namespace) -> None:
    org, prefix = await m.revoke_key(a.org, a.prefix)
    print(f"key {prefix} of {org.name} revoked")


async def keys_rotate(m: Manager, a: argparse.Namespace) -> None:
    org, key = await m.rotate_key(a.org, a.prefix)
    print(f"key {key.revoked} of {org.name} revoked; replacement prefix {key.prefix}, shown only once:")
    print(key.key)


def add_parsers(sub: Any) -> None:
    orgs = sub.add_parser("orgs", help="manage orgs").add_subparsers(dest="command", required=True)
    c = orgs.add_parser("create", help="create an org and print its first key (last line)")
    c.add_argument("name")
    c.set_defaults(run=orgs_create)
    orgs.add_parser("list", help="list orgs").set_defaults(run=orgs_list)
    for verb in ("disable", "enable"):
        d = orgs.add_parser(verb, help=f"{verb} an org")
        d.add_argument("org", help="org name or id")
        d.set_defaults(run=orgs_disable)
    az = orgs.add_parser("azure", help="set an org's Azure OpenAI endpoint and api-version")
    az.add_argument("org")
    az.add_argument("--endpoint", help="https://<resource>.openai.azure.com (omit to clear)")
    az.add_argument("--api-version", help="e.g. 2024-10-21 (omit to clear)")
    az.set_defaults(run=orgs_azure)

    keys = sub.add_parser("keys", help="manage org keys").add_subparsers(dest="command", required=True)
    kc = keys.add_parser("create", help="add a key to an org")
    kc.add_argument("org")
    kc.set_defaults(run=keys_create)
    kl = keys.add_parser("list", help="list an org's keys (prefixes only)")
    kl.add_argument("org")
    kl.set_defaults(run=keys_list)
    for verb, fn in (("revoke", keys_revoke), ("rotate", keys_rotate)):
        k = keys.add_parser(verb, help=f"{verb} a key (by prefix)")
        k.add_argument("org")
        # A prefix may start with '-' (keys are URL-safe base64): main() lets
        # such a value through as this positional (see PREFIX_ARGS).
        k.add_argument("prefix", help="the key's prefix as `keys list` shows it")
        k.set_defaults(run=fn)
