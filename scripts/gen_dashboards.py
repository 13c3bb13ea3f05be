"""Generate dashboards/<name>.json from dashboards/<name>.dashboard.py (grafanalib).

    python scripts/gen_dashboards.py           # write the JSON files
    python scripts/gen_dashboards.py --check   # exit 1 if any committed JSON is out of date

Each ``*.dashboard.py`` defines a module-level ``dashboard`` (a grafanalib ``Dashboard``).
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

from grafanalib._gen import DashboardEncoder
from grafanalib.core import Dashboard

DASHBOARDS_DIR = Path(__file__).resolve().parent.parent / "dashboards"
SUFFIX = ".dashboard.py"


def sources(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


def json_path(source: Path) -> Path:
    return source.with_name(source.name.removesuffix(SUFFIX) + ".json")


def load(source: Path) -> Dashboard:
    """Run a dashboard file with its directory importable (for the shared ``panels`` module)."""
    sys.path.insert(0, str(source.parent))
    try:
        namespace = runpy.run_path(str(source))
    finally:
        sys.path.remove(str(source.parent))
    dashboard = namespace.get("dashboard")
    if not isinstance(dashboard, Dashboard):
        raise TypeError(f"{source} must define `dashboard`, a grafanalib Dashboard")
    return dashboard


def render(dashboard: Dashboard) -> str:
    data = dashboard.to_json_data()
    return json.dumps(data, cls=DashboardEncoder, sort_keys=True, indent=2) + "\n"


def drifted(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    """JSON files whose content differs from what their source generates (or are missing)."""
    stale = []
    for source in sources(directory):
        target = json_path(source)
        if not target.exists() or target.read_text() != render(load(source)):
            stale.append(target)
    return stale


def write_all(directory: Path = DASHBOARDS_DIR) -> list[Path]:
    written = []
    for source in sources(directory):
        target = json_path(source)
        target.write_text(render(load(source)))
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if a committed JSON differs from its source")
    parser.add_argument("--dir", type=Path, default=DASHBOARDS_DIR, help="dashboards directory")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted(args.dir)
        for path in stale:
            print(f"out of date: {path} (run scripts/gen_dashboards.py)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_all(args.dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
