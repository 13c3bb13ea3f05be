"""GC tuning is applied only by the command that owns the process, never by create_app."""

from __future__ import annotations

import gc
from dataclasses import replace

import httpx

from proxy.app import create_app
from proxy.runtime.process import DEFAULT_GC_THRESHOLDS, tune_for_serving
from proxy.settings import Settings
from tests.support.servers import running


def demo_settings() -> Settings:
    return replace(Settings.from_env(), demo=True, redis_url=None)


def test_create_app_leaves_the_collector_alone() -> None:
    before = (gc.get_freeze_count(), gc.get_threshold())
    with running(create_app(demo_settings())) as server:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert (gc.get_freeze_count(), gc.get_threshold()) == before


def test_served_app_settles_the_heap_and_releases_it_at_stop() -> None:
    with running(tune_for_serving(create_app(demo_settings()))) as server:
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (20_000, 50, 100)
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == DEFAULT_GC_THRESHOLDS
