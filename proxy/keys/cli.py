"""`meterline keys create|list|rotate|disable|hash`: thin wrappers over the /admin/keys API."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from proxy.keys.store import hash_key
from proxy.settings import Settings


def add_parser(sub: Any) -> None:
    keys = sub.add_parser("keys", help="create, list, rotate or disable inbound API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key (printed once) via the admin API")
    create.add_argument("--department", help="department the key spends for")
    create.add_argument("--user", help="user the key belongs to (optional)")
    create.add_argument("--expires-at", help="unix seconds or ISO date/datetime (optional)")
    create.add_argument("--admin", action="store_true", help="an admin key instead")
    listing = actions.add_parser("list", help="list keys (no raw keys, no full hashes)")
    rotate = actions.add_parser("rotate", help="replace a key; the old one works for a while")
    rotate.add_argument("id")
    rotate.add_argument("--grace-seconds", type=float, default=3600.0,
                        help="how long the old key keeps working (default 3600)")
    disable = actions.add_parser("disable", help="disable a key now")
    disable.add_argument("id")
    for action in (create, listing, rotate, disable):
        action.add_argument("--url", help="proxy URL (default http://MET_HOST:MET_PORT)")
        action.add_argument("--admin-key", help="admin key (default MET_ADMIN_KEY)")
    hashed = actions.add_parser("hash", help="print the sha256 of a key for keys.yaml")
    hashed.add_argument("key")
    keys.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "hash":
        print(hash_key(args.key))
        return 0
    settings = Settings.from_env()
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    admin_key = args.admin_key or settings.admin_key
    if not admin_key:
        print("meterline: pass --admin-key or set MET_ADMIN_KEY", file=sys.stderr)
        return 2
    method, path, body = request_for(args)
    return call_admin(method, url + path, admin_key, body)


def request_for(args: argparse.Namespace) -> tuple[str, str, dict[str, Any] | None]:
    if args.action == "create":
        body: dict[str, Any] = {"department": args.department, "user": args.user,
                                "admin": args.admin}
        if args.expires_at:
            body["expires_at"] = args.expires_at
        return "POST", "/admin/keys", body
    if args.action == "list":
        return "GET", "/admin/keys", None
    if args.action == "rotate":
        return "POST", f"/admin/keys/{args.id}/rotate", {"grace_seconds": args.grace_seconds}
    return "POST", f"/admin/keys/{args.id}/disable", None


def call_admin(method: str, url: str, admin_key: str, body: dict[str, Any] | None) -> int:
    import httpx

    try:
        response = httpx.request(method, url, json=body, timeout=30,
                                 headers={"authorization": f"Bearer {admin_key}"})
    except httpx.HTTPError as exc:
        print(f"meterline: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    text = orjson.dumps(response.json(), option=orjson.OPT_INDENT_2).decode()
    if response.status_code >= 400:
        print(text, file=sys.stderr)
        return 1
    print(text)
    return 0
