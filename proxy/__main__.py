"""CLI: meterline serve | check-config | mock-upstream | cache-eval | cache-train | keys | init |
mcp."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from proxy.config.errors import ConfigError
from proxy.settings import Settings, SettingsError

if TYPE_CHECKING:
    from proxy.config.loader import Config


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.app import create_app
    from proxy.config.loader import load_config
    from proxy.runtime.logs import configure_logging
    from proxy.runtime.process import tune_for_serving
    from proxy.runtime.startup import AnnouncingServer, bind_problem

    settings = Settings.from_env()
    overrides: dict[str, object] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    if args.config:
        overrides["config_dir"] = Path(args.config)
    if args.demo:
        overrides["demo"] = True
        if "MET_DEMO_HISTORY" not in settings.env:
            overrides["demo_history"] = True
    if args.no_demo_history:
        overrides["demo_history"] = False
    if args.workers:
        overrides["workers"] = args.workers
    settings = replace(settings, **overrides)  # type: ignore[arg-type]
    if settings.demo:
        local = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host  # nosec B104 # compares, binds nothing
        settings = replace(settings, mock_upstream_url=f"http://{local}:{settings.port}/_mock/v1")
    try:
        load_config(settings.config_dir)
    except ConfigError as exc:
        print(f"meterline: invalid config, not starting:\n{exc}", file=sys.stderr)
        return 2
    if problem := bind_problem(settings.host, settings.port):
        print(f"meterline: {problem}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level, settings.log_format)
    common: dict[str, Any] = dict(
        host=settings.host,
        port=settings.port,
        loop=settings.event_loop,
        http="httptools",
        access_log=False,  # ours is one JSON line with cost and ids (proxy/runtime/logs.py)
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers propagate to the root handler configured above
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,
        lifespan="on",
        # nothing here reads the client address, so X-Forwarded-* rewriting is pure cost on
        # every request; and the Server header only advertises the stack
        proxy_headers=False,
        server_header=False,
    )
    if settings.workers > 1:
        from proxy.runtime.workers import ReusePortSupervisor

        export_for_workers(settings)
        ReusePortSupervisor(uvicorn.Config("proxy.__main__:create_served_app", factory=True,
                                           workers=settings.workers, **common)).run()
    else:
        AnnouncingServer(uvicorn.Config(
            tune_for_serving(create_app(settings), settings.drain_seconds), **common),
            banner(settings)).run()
    return 0


def create_served_app() -> Any:
    """The app each `meterline serve --workers N` process builds (uvicorn's factory)."""
    from proxy.app import create_app
    from proxy.runtime.logs import configure_logging
    from proxy.runtime.process import tune_for_serving

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    return tune_for_serving(create_app(settings), settings.drain_seconds)


def banner(settings: Settings) -> str:
    url = f"http://{settings.host}:{settings.port}"
    if not settings.demo:
        return f"Meterline ready on {url}"
    history = ("; spend before today is synthetic demo data, user demo-synthetic"
               if settings.demo_history and not settings.redis_url else "")
    return (f"Meterline demo ready on {url}  (mock upstream; keys "
            f"sk-demo-engineering|sales|marketing|executive, admin sk-demo-admin{history})")


def export_for_workers(settings: Settings) -> None:
    """Workers build their own Settings from the environment; metrics go through files that
    this start command wipes (PROMETHEUS_MULTIPROC_DIR), so every worker's counters add up."""
    import os
    import shutil
    import tempfile

    mp_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(
        prefix="meterline-prom-"
    )
    shutil.rmtree(mp_dir, ignore_errors=True)
    os.makedirs(mp_dir)
    os.environ.update(
        {
            "PROMETHEUS_MULTIPROC_DIR": mp_dir,
            "MET_HOST": settings.host,
            "MET_PORT": str(settings.port),
            "MET_CONFIG_DIR": str(settings.config_dir),
            "MET_DEMO": "1" if settings.demo else "0",
            "MET_DEMO_HISTORY": "1" if settings.demo_history else "0",
        }
    )
    if settings.mock_upstream_url:
        os.environ["MET_MOCK_UPSTREAM_URL"] = settings.mock_upstream_url


def _check_config(args: argparse.Namespace) -> int:
    from proxy.config.loader import load_config

    try:
        config = load_config(Path(args.path))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.strict and config.warnings:
        print(f"{args.path}: {len(config.warnings)} warning(s), failing (--strict)",
              file=sys.stderr)
        return 1
    print(
        f"{args.path}: OK (version {config.version}; {len(config.providers.models)} models, "
        f"{len(config.departments.departments)} departments)"
    )
    if not args.diff:
        return 0
    return _print_diff(config, Path(args.against or Settings.from_env().config_dir))


def _print_diff(candidate: Config, live_dir: Path) -> int:
    from proxy.config.loader import load_config
    from proxy.runtime.reload import diff, format_diff

    try:
        live = load_config(live_dir)
    except ConfigError as exc:
        print(
            f"live config {live_dir} does not load, nothing to compare with:\n{exc}",
            file=sys.stderr,
        )
        return 1
    print(f"changes against {live_dir}:")
    print(format_diff(diff(live, candidate)))
    return 0


def _mock_upstream(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.demo.upstream import create_mock_app

    uvicorn.run(
        create_mock_app(),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
    return 0


def _cache_eval(rest: list[str]) -> int:
    from proxy.cache.matching.evaluate import main as cache_eval_main

    return cache_eval_main(rest)


def _cache_train(rest: list[str]) -> int:
    from proxy.cache.matching.train import main as cache_train_main

    return cache_train_main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meterline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the proxy (embedded state unless REDIS_URL is set)")
    serve.add_argument("--host", help="bind address (MET_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (MET_PORT, default 8080)")
    serve.add_argument("--config", help="config directory (MET_CONFIG_DIR, default rules/)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes, each on its own SO_REUSEPORT socket (MET_WORKERS, default 1; "
             "needs REDIS_URL to share state)",
    )
    serve.add_argument(
        "--demo", action="store_true", help="answer from the built-in mock upstream with demo keys"
    )
    serve.add_argument(
        "--no-demo-history",
        action="store_true",
        help="with --demo, start without the 8 weeks of synthetic, labelled spend history "
        "(MET_DEMO_HISTORY=0)",
    )
    serve.set_defaults(func=_serve)
    check = sub.add_parser("check-config", help="validate every YAML file in a config directory")
    check.add_argument("path", nargs="?", default=str(Settings().config_dir))
    check.add_argument(
        "--diff",
        action="store_true",
        help="also show what PATH would change against the live directory",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="fail on warnings too (routing or experiment scopes naming no department or model)",
    )
    check.add_argument(
        "--against",
        metavar="LIVE",
        help="live config directory for --diff (MET_CONFIG_DIR, default rules/)",
    )
    check.set_defaults(func=_check_config)
    mock = sub.add_parser("mock-upstream", help="run the deterministic mock OpenAI server")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=18000)
    mock.set_defaults(func=_mock_upstream)
    sub.add_parser(
        "cache-eval", help="score a labelled pairs file with the cache's match rule", add_help=False
    )
    sub.add_parser(
        "cache-train",
        help="retrain the semantic cache's match verifier on generated pairs",
        add_help=False,
    )
    from proxy.keys import cli as keys_cli
    keys_cli.add_parser(sub)
    keys_cli.add_init_parser(sub)
    from proxy.mcp_sonarqube import cli as mcp_cli

    mcp_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cache-eval"]:
        return _cache_eval(argv[1:])
    if argv[:1] == ["cache-train"]:
        return _cache_train(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except SettingsError as exc:
        print(f"meterline: {exc}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
