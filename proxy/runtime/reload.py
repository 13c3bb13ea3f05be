"""Hot reload: what changed between two configs, and the SIGHUP / file-watch triggers.

Every trigger goes through `lifecycle.reload_config`, which validates the whole directory before
it swaps anything in, so a bad file is rejected with its reason and the old rules stay live.
Experiment assignments only move when an experiment's own definition changed (see `diff`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from proxy.config.errors import ConfigError
from proxy.config.loader import CONFIG_FILES, Config, load_config
from proxy.runtime.lifecycle import reliability_of, reload_config
from proxy.runtime.services import Services

log = logging.getLogger("meterline")
WATCH_INTERVAL_S = 2.0
# Fields whose change moves users between arms; other edits keep every assignment.
REASSIGNING_FIELDS = frozenset({"salt", "split", "variants", "traffic"})


def _dumps(items: Mapping[str, BaseModel]) -> dict[str, dict[str, Any]]:
    return {name: item.model_dump(mode="json") for name, item in items.items()}


def _changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def _named_diff(old: Mapping[str, dict[str, Any]],
                new: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": [{"name": n, "fields": _changed_fields(old[n], new[n])}
                    for n in sorted(set(old) & set(new)) if old[n] != new[n]],
    }


def _routing_diff(old: Config, new: Config) -> dict[str, Any]:
    before = {r.name: r.model_dump(mode="json") for r in old.routing.rules} if old.routing else {}
    after = {r.name: r.model_dump(mode="json") for r in new.routing.rules} if new.routing else {}
    out = _named_diff(before, after)
    kept = [n for n in before if n in after]
    out["order_changed"] = kept != [n for n in after if n in before]
    rel_old = old.routing.reliability.model_dump() if old.routing else None
    rel_new = new.routing.reliability.model_dump() if new.routing else None
    out["reliability_changed"] = rel_old != rel_new
    return out


def _experiments_diff(old: Config, new: Config) -> dict[str, Any]:
    before = _dumps(old.experiments.experiments) if old.experiments else {}
    after = _dumps(new.experiments.experiments) if new.experiments else {}
    out = _named_diff(before, after)
    for change in out["changed"]:
        change["reassigns_users"] = bool(REASSIGNING_FIELDS & set(change["fields"]))
    return out


def diff(old: Config, new: Config) -> dict[str, Any]:
    """What `new` changes relative to `old`: rules, experiments, models, providers, departments."""
    return {
        "version": {"old": old.version, "new": new.version},
        "rules": _routing_diff(old, new),
        "experiments": _experiments_diff(old, new),
        "models": _named_diff(_dumps(old.providers.models), _dumps(new.providers.models)),
        "providers": _named_diff(_dumps(old.providers.providers),
                                 _dumps(new.providers.providers)),
        "departments": _named_diff(_dumps(old.departments.departments),
                                   _dumps(new.departments.departments)),
        "keys": _keys_diff(old, new),
    }


def _keys_diff(old: Config, new: Config) -> dict[str, Any]:
    """keys.yaml by id; a changed hash shows as the field name `sha256`, never its value."""
    before = {k.id: k.model_dump(mode="json") for k in old.keys.keys}
    after = {k.id: k.model_dump(mode="json") for k in new.keys.keys}
    return _named_diff(before, after)


def _section_lines(title: str, part: Mapping[str, Any]) -> list[str]:
    lines = [f"  + {n}" for n in part["added"]] + [f"  - {n}" for n in part["removed"]]
    for change in part["changed"]:
        note = "  (some users change arm)" if change.get("reassigns_users") else ""
        lines.append(f"  ~ {change['name']}: {', '.join(change['fields'])}{note}")
    if part.get("order_changed"):
        lines.append("  ~ rule order changed (first match wins)")
    if part.get("reliability_changed"):
        lines.append("  ~ reliability settings changed")
    return [f"{title}:", *lines] if lines else []


def format_diff(changes: Mapping[str, Any]) -> str:
    """Human-readable diff for `meterline check-config --diff`."""
    version = changes["version"]
    lines = [f"version {version['old']} -> {version['new']}"]
    for title in ("rules", "experiments", "models", "providers", "departments", "keys"):
        lines += _section_lines(title, changes[title])
    if len(lines) == 1:
        lines.append("no changes to rules, experiments, models, providers, departments or keys")
    return "\n".join(lines)


async def reload_and_diff(services: Services) -> dict[str, Any]:
    """Reload the config directory; raise ConfigError (old config stays live) when invalid."""
    old = services.config
    new = await reload_config(services)
    return diff(old, new)


def preview(services: Services) -> dict[str, Any]:
    """What a reload would change, without applying it; raise ConfigError when invalid."""
    new = load_config(services.settings.config_dir)
    reliability_of(new)
    return diff(services.config, new)


async def reload_logged(services: Services, why: str) -> None:
    """Reload for a signal or a file change: nobody waits for an answer, so log the outcome."""
    try:
        changes = await reload_and_diff(services)
    except ConfigError as exc:
        log.error("config reload (%s) rejected, old config stays live:\n%s", why, exc)
        return
    except Exception:  # noqa: BLE001 - a failed reload must not end the watcher or the server
        log.exception("config reload (%s) failed; old config stays live", why)
        return
    log.info("config reloaded (%s): %s", why, format_diff(changes).replace("\n", "; "))


def files_signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, mtime_ns, size) of every rules file that exists; changes when any file does."""
    out = []
    for name in CONFIG_FILES:
        try:
            stat = (directory / name).stat()
        except FileNotFoundError:
            continue
        out.append((name, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


@dataclass
class ReloadTriggers:
    """SIGHUP handler (main thread only) and the optional mtime poller; `stop()` removes both."""

    services: Services
    interval_s: float = WATCH_INTERVAL_S
    signal_installed: bool = False
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    def install_signal(self) -> bool:
        """Reload on SIGHUP. A no-op off the main thread or where the loop has no signals."""
        main = threading.current_thread() is threading.main_thread()
        if not main or not hasattr(signal, "SIGHUP"):
            return False
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError) as exc:
            log.warning("SIGHUP reload not available: %s", exc)
            return False
        self.signal_installed = True
        return True

    def _on_sighup(self) -> None:
        self.services.spawn(reload_logged(self.services, "SIGHUP"))

    def start_watching(self) -> None:
        self.watcher = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        directory = self.services.settings.config_dir
        seen = files_signature(directory)
        while True:
            await asyncio.sleep(self.interval_s)
            now = files_signature(directory)
            if now != seen:
                seen = now  # a rejected edit is not retried until the files change again
                await reload_logged(self.services, "file change")

    async def stop(self) -> None:
        if self.signal_installed:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            self.signal_installed = False
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
            self.watcher = None


def start_triggers(services: Services) -> ReloadTriggers:
    """Called from the app lifespan: SIGHUP always (main thread), file polling when enabled."""
    triggers = ReloadTriggers(services)
    triggers.install_signal()
    if services.settings.watch_config:
        triggers.start_watching()
    return triggers
