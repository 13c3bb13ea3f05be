"""`meterline keys create|list|rotate|disable|hash`: thin wrappers over the /admin/keys API."""

from __future__ import annotations

import argparse
import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import yaml

from proxy.keys.store import DEMO_ADMIN_KEY, hash_key, new_raw_key
from proxy.settings import Settings, default_config_dir


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
        action.add_argument("--admin-key", help="admin key (default MET_ADMIN_KEY; a demo "
                            "server's own, sk-demo-admin, when the server says it is a demo)")
    hashed = actions.add_parser("hash", help="print the sha256 of a key for keys.yaml")
    hashed.add_argument("key")
    keys.set_defaults(func=run)


def add_init_parser(sub: Any) -> None:
    init = sub.add_parser("init", help="write a config directory with an admin key and a first "
                          "department key (printed once)")
    init.add_argument("dir", help="new or empty directory")
    init.add_argument("--department", help="department of the first key (default: the first "
                      "one in departments.yaml)")
    init.set_defaults(func=run_init)


def run_init(args: argparse.Namespace) -> int:
    """Copy the shipped rules to DIR and put two new keys' hashes in its keys.yaml."""
    target = Path(args.dir)
    if target.exists() and any(target.iterdir()):
        print(f"meterline: {target} is not empty; init writes a new config directory only",
              file=sys.stderr)
        return 1
    shutil.copytree(default_config_dir(), target, dirs_exist_ok=True)
    departments = yaml.safe_load((target / "departments.yaml").read_text())["departments"]
    department = args.department or next(iter(departments))
    if department not in departments:
        print(f"meterline: no department '{department}' in {target / 'departments.yaml'}; "
              f"known: {', '.join(departments)}", file=sys.stderr)
        shutil.rmtree(target)
        return 2
    admin_key, first_key = new_raw_key(), new_raw_key()
    keys = [{"id": "admin-1", "sha256": hash_key(admin_key), "admin": True},
            {"id": f"{department}-1", "sha256": hash_key(first_key), "department": department}]
    (target / "keys.yaml").write_text(
        "# Written by `meterline init`: sha256 of the keys it printed once. More keys:\n"
        "# `meterline keys create --department NAME --admin-key ...` (kept in the key store).\n"
        + yaml.safe_dump({"keys": keys}, sort_keys=False))
    print(f"Config written to {target}. These keys are shown once; store them now:\n"
          f"  admin key:  {admin_key}\n  {department} key:  {first_key}\n"
          f"Next: set the provider credentials {target / 'providers.yaml'} names, then\n"
          f"  meterline serve --config {target}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.action == "hash":
        print(hash_key(args.key))
        return 0
    settings = Settings.from_env()
    url = (args.url or f"http://{settings.host}:{settings.port}").rstrip("/")
    admin_key = args.admin_key or settings.admin_key or demo_admin_key(url)
    if not admin_key:
        print(f"meterline: {url} needs an admin key: pass --admin-key or set MET_ADMIN_KEY "
              "(the one the server was started with)", file=sys.stderr)
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


def demo_admin_key(url: str) -> str | None:
    """The demo's published admin key, when the server at `url` says it runs --demo."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
            health = orjson.loads(response.read())
    except (OSError, ValueError):
        return None  # unreachable or not Meterline: call_admin reports it
    return DEMO_ADMIN_KEY if isinstance(health, dict) and health.get("demo") is True else None


def call_admin(method: str, url: str, admin_key: str, body: dict[str, Any] | None) -> int:
    """One admin API call with the standard library (the CLI needs no HTTP client package)."""
    request = urllib.request.Request(
        url, method=method, data=None if body is None else orjson.dumps(body),
        headers={"authorization": f"Bearer {admin_key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:
        print(f"meterline: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        text = orjson.dumps(orjson.loads(raw), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        text = raw.decode("utf-8", "replace")
    if status >= 400:
        print(text, file=sys.stderr)
        return 1
    print(text)
    return 0
