"""All YAML under the config dir -> one frozen, cross-checked Config with a version hash."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from proxy.cache import config as cache_mod
from proxy.config.departments import DepartmentsConfig, load_departments
from proxy.config.errors import ConfigError
from proxy.config.providers import ProvidersConfig, load_providers
from proxy.keys.store import KeysConfig, load_keys
from proxy.routing import experiments as experiments_mod
from proxy.routing import rules as routing_mod
from proxy.spend.pricing import PricingTable, load_pricing

OTHER_TASK = "other"
CONFIG_FILES = ("providers.yaml", "keys.yaml", "departments.yaml", "routing.yaml",
                "experiments.yaml", "cache.yaml", "pricing.yaml")


@dataclass(frozen=True)
class Config:
    version: str
    directory: Path
    providers: ProvidersConfig
    keys: KeysConfig
    departments: DepartmentsConfig
    pricing: PricingTable
    routing: routing_mod.RoutingRules | None = None
    experiments: experiments_mod.Experiments | None = None
    cache: cache_mod.CacheConfig | None = None
    # names in scopes that match nothing: loading goes on, check-config --strict fails
    warnings: tuple[str, ...] = ()

    @property
    def model_names(self) -> frozenset[str]:
        return frozenset(self.providers.models)

    @cached_property
    def task_names(self) -> frozenset[str]:
        """The x-meterline-task values counted by name: routing.yaml `tasks` and every task a
        rule or an experiment names."""
        names = self.routing.task_names() if self.routing is not None else set()
        if self.experiments is not None:
            names |= self.experiments.task_names()
        return frozenset(names)

    def task_label(self, value: str | None) -> str | None:
        """A request's task as records and analytics keep it: None, a known name, or "other"."""
        if not value:
            return None
        return value if value in self.task_names else OTHER_TASK


def config_version(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in CONFIG_FILES:
        path = directory / name
        if path.exists():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def load_config(directory: Path) -> Config:
    """Load and validate everything; raise ConfigError naming file, field and value."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: config directory not found "
                          "(set MET_CONFIG_DIR or pass --config)")
    providers = load_providers(directory / "providers.yaml")
    keys = load_keys(directory / "keys.yaml")
    departments = load_departments(directory / "departments.yaml")
    pricing_file = directory / "pricing.yaml"
    pricing = load_pricing(*([pricing_file] if pricing_file.exists() else []))
    routing = _optional(directory / "routing.yaml", routing_mod.load)
    experiments = _optional(directory / "experiments.yaml", experiments_mod.load)
    cache = _optional(directory / "cache.yaml", cache_mod.load_cache_config)
    config = Config(config_version(directory), directory, providers, keys, departments, pricing,
                    routing, experiments, cache)
    check_references(config)
    return replace(config, warnings=tuple(scope_warnings(config)))


def _optional(path: Path, loader: Any) -> Any:
    return loader(path) if path.exists() else None


def check_allowed_models(config: Config) -> list[str]:
    """A rule or experiment limited to named departments must not send one of them to a model
    its allowed_models exclude (the request path leaves such models out anyway; here the
    mistake is caught when it can be known statically)."""
    routes: list[tuple[str, str, tuple[str, ...] | None, str]] = []
    if config.routing is not None:
        routes += [(f"{config.directory / 'routing.yaml'}: rule '{r.name}'",
                    f"rules[{i}].{'target' if m == r.target else 'fallbacks'}",
                    r.match.department, m)
                   for i, r in enumerate(config.routing.rules) for m in (r.target, *r.fallbacks)]
    if config.experiments is not None:
        routes += [(f"{config.directory / 'experiments.yaml'}: experiment '{e.name}'",
                    f"experiments.{e.name}.{a.name if e.variants is None else 'variants'}",
                    e.scope.department, a.model)
                   for e in config.experiments.experiments.values() for a in e.arms]
    departments = config.departments.departments
    return [f"{where} (field '{field}') sends department '{name}' to model '{model}', which its "
            f"allowed_models {list(departments[name].allowed_models)} exclude"
            for where, field, names, model in routes
            for name in names or ()
            if name in departments and not departments[name].allows(model)]


def check_references(config: Config) -> None:
    """Cross-file checks: every model a rule names must exist in providers.yaml."""
    known = set(config.model_names)
    problems: list[str] = []
    departments = set(config.departments.departments)
    providers = config.providers.providers
    for department in config.departments.departments.values():
        for provider in sorted(set(department.virtual_keys) - set(providers)):
            problems.append(f"{config.directory / 'departments.yaml'}: field "
                            f"'departments.{department.name}.virtual_keys.{provider}' names no "
                            f"provider; known: {sorted(providers)}")
    for key in config.keys.keys:
        if not key.admin and key.department not in departments:
            problems.append(f"{config.directory / 'keys.yaml'}: field 'keys.{key.id}.department' "
                            f"has value {key.department!r}: not one of {sorted(departments)}")
    try:
        if config.routing is not None:
            routing_mod.check_models(config.routing, known, str(config.directory / "routing.yaml"))
        if config.experiments is not None:
            experiments_mod.check_models(config.experiments, known,
                                         str(config.directory / "experiments.yaml"))
    except ConfigError as exc:
        problems.append(str(exc))
    problems += check_allowed_models(config)
    if config.cache is not None:
        routes = [r.name for r in config.routing.rules] if config.routing else []
        problems += cache_mod.check_references(config.cache, config.directory / "cache.yaml",
                                               departments, known, routes)
    if problems:
        raise ConfigError("\n".join(problems))


def scope_warnings(config: Config) -> list[str]:
    """Routing and experiment conditions naming departments or models that do not exist."""
    departments, models = set(config.departments.departments), set(config.model_names)
    found: list[str] = []
    if config.routing is not None:
        found += routing_mod.scope_warnings(config.routing, departments, models,
                                            str(config.directory / "routing.yaml"))
    if config.experiments is not None:
        found += experiments_mod.scope_warnings(config.experiments, departments, models,
                                                str(config.directory / "experiments.yaml"))
    return found
