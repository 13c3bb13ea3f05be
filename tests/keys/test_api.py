"""The admin endpoints for inbound keys (proxy/keys/api.py) on a demo proxy: create, list, rotate,
disable, and the exact 4xx for each bad body. Store semantics are in tests/keys/test_store.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.app import create_app
from proxy.settings import Settings
from tests.support.servers import ServerThread, make_config_dir

ADMIN = {"authorization": "Bearer sk-demo-admin"}
ENG = {"authorization": "Bearer sk-demo-engineering"}


@pytest.fixture(scope="module")
def server(mock_upstream: ServerThread, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[ServerThread]:
    config_dir: Path = make_config_dir(tmp_path_factory.mktemp("rules"), mock_upstream.url)
    settings = Settings.from_env({"MOCK_UPSTREAM_KEY": "sk-upstream-test"},
                                 config_dir=config_dir, demo=True)
    running = ServerThread(create_app(settings)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=ADMIN, timeout=10) as http:
        yield http


def error(message: str, param: str | None, code: str,
          kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def test_create_shows_the_raw_key_once_and_it_works(client: httpx.Client) -> None:
    created = client.post("/admin/keys", json={"department": "engineering", "user": "ann"})
    assert created.status_code == 201
    body = created.json()
    raw = body["key"]
    assert (body["department"], body["user"], body["admin"], body["active"]) == (
        "engineering", "ann", False, True)
    assert body["note"] == "Store this key now: it is shown only once."
    assert body["sha256"].endswith("…") and len(body["sha256"]) == 13
    listed = client.get("/admin/keys").json()
    assert listed["object"] == "list"
    mine = [k for k in listed["data"] if k["id"] == body["id"]]
    assert len(mine) == 1 and "key" not in mine[0] and raw not in str(listed)
    models = httpx.get(f"{client.base_url}/v1/models",
                       headers={"authorization": f"Bearer {raw}"})
    assert models.status_code == 200


def test_an_admin_key_needs_no_department(client: httpx.Client) -> None:
    body = client.post("/admin/keys", json={"admin": True}).json()
    assert (body["admin"], body["department"]) == (True, None)


def test_expiry_as_unix_seconds_or_iso_date(client: httpx.Client) -> None:
    later = time.time() + 3600
    assert client.post("/admin/keys", json={"department": "sales", "expires_at": later}
                       ).json()["expires_at"] == pytest.approx(later)
    iso = client.post("/admin/keys", json={"department": "sales", "expires_at": "2999-01-01"})
    assert iso.status_code == 201 and iso.json()["expires_at"] == 32472144000.0


@pytest.mark.parametrize(("body", "expected"), [
    ({}, error("Missing required parameter: 'department'.", "department",
               "missing_required_parameter")),
    ({"department": "nobody"}, error(
        "Unknown department 'nobody'; known: engineering, sales, marketing, executive.",
        "department", "invalid_value")),
    ({"department": 7}, error("Invalid 'department': Input should be a valid string.",
                              "department", "invalid_value")),
    ({"department": "sales", "colour": "red"}, error(
        "Unrecognized request argument supplied: 'colour'.", "colour", "unknown_parameter")),
    ({"department": "sales", "user": ""}, error(
        "Invalid 'user': String should have at least 1 character.", "user", "invalid_value")),
    ({"department": "sales", "admin": "yes"}, error(
        "Invalid 'admin': Input should be a valid boolean.", "admin", "invalid_value")),
    ({"department": "sales", "expires_at": 1}, error(
        "Invalid 'expires_at': it is in the past.", "expires_at", "invalid_value")),
    ({"department": "sales", "expires_at": "soon"}, error(
        "Invalid 'expires_at': expected unix seconds, an ISO date (2025-06-01) or datetime, "
        "got 'soon'.", "expires_at", "invalid_value")),
])
def test_bad_create_bodies_are_400(client: httpx.Client, body: dict[str, Any],
                                   expected: dict[str, Any]) -> None:
    response = client.post("/admin/keys", json=body)
    assert response.status_code == 400
    assert response.json() == expected


def test_a_body_that_is_not_an_object_is_400(client: httpx.Client) -> None:
    response = client.post("/admin/keys", content=b"[1]",
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"


def test_rotate_gives_a_new_key_and_keeps_the_old_for_the_grace(client: httpx.Client) -> None:
    old = client.post("/admin/keys", json={"department": "sales"}).json()
    rotated = client.post(f"/admin/keys/{old['id']}/rotate", json={"grace_seconds": 60})
    assert rotated.status_code == 201
    body = rotated.json()
    assert body["key"] != old["key"] and body["id"] != old["id"]
    assert body["replaces"]["id"] == old["id"] and body["replaces"]["active"] is True
    assert body["replaces"]["expires_at"] == pytest.approx(time.time() + 60, abs=5)
    for raw in (old["key"], body["key"]):
        assert httpx.get(f"{client.base_url}/v1/models",
                         headers={"authorization": f"Bearer {raw}"}).status_code == 200


def test_rotate_without_grace_ends_the_old_key_now(client: httpx.Client) -> None:
    old = client.post("/admin/keys", json={"department": "sales"}).json()
    body = client.post(f"/admin/keys/{old['id']}/rotate").json()
    assert body["replaces"]["active"] is False


@pytest.mark.parametrize(("body", "message"), [
    ({"grace_seconds": -1}, "Invalid 'grace_seconds': Input should be greater than or equal "
                            "to 0."),
    ({"grace_seconds": 30 * 86_400 + 1}, "Invalid 'grace_seconds': Input should be less than "
                                         "or equal to 2592000."),
])
def test_bad_rotation_bodies_are_400(client: httpx.Client, body: dict[str, Any],
                                     message: str) -> None:
    key_id = client.post("/admin/keys", json={"department": "sales"}).json()["id"]
    response = client.post(f"/admin/keys/{key_id}/rotate", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == message
    assert response.json()["error"]["param"] == "grace_seconds"


@pytest.mark.parametrize(("path", "body", "param"), [
    ("rotate", {"grace_seconds": "60"}, "grace_seconds"),
    ("create", {"department": "sales", "expires_at": [1]}, "expires_at"),
])
def test_a_wrong_type_in_a_union_field_names_the_field(client: httpx.Client, path: str,
                                                       body: dict[str, Any], param: str) -> None:
    key_id = client.post("/admin/keys", json={"department": "sales"}).json()["id"]
    url = "/admin/keys" if path == "create" else f"/admin/keys/{key_id}/rotate"
    response = client.post(url, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["message"].startswith(f"Invalid '{param}': ")


def test_disable(client: httpx.Client) -> None:
    created = client.post("/admin/keys", json={"department": "sales"}).json()
    disabled = client.post(f"/admin/keys/{created['id']}/disable")
    assert disabled.status_code == 200
    assert (disabled.json()["disabled"], disabled.json()["active"]) == (True, False)
    refused = httpx.get(f"{client.base_url}/v1/models",
                        headers={"authorization": f"Bearer {created['key']}"})
    assert refused.status_code == 401


@pytest.mark.parametrize("path", ["/admin/keys/nope/rotate", "/admin/keys/nope/disable"])
def test_unknown_key_is_404(client: httpx.Client, path: str) -> None:
    response = client.post(path)
    assert response.status_code == 404
    assert response.json() == error("No key with id 'nope'.", "id", "key_not_found")


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/admin/keys"), ("GET", "/admin/keys"), ("POST", "/admin/keys/x/rotate"),
    ("POST", "/admin/keys/x/disable")])
def test_every_endpoint_needs_an_admin_key(server: ServerThread, method: str,
                                           path: str) -> None:
    as_department = httpx.request(method, server.url + path, headers=ENG,
                                  json={"department": "sales"})
    assert as_department.status_code == 403
    assert as_department.json()["error"]["code"] == "admin_key_required"
    assert httpx.request(method, server.url + path).status_code == 401
