"""The `redis_url` / `redis_prefix` fixtures give a real Redis Stack and clean up after a test."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import redis
from redis.commands.search.query import Query

from tests.conftest import delete_redis_prefix

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def test_server_has_search_and_json_modules(client: redis.Redis) -> None:
    names = {entry[b"name"] for entry in client.execute_command("MODULE", "LIST")}
    assert {b"search", b"ReJSON"} <= names


def test_vector_index_answers_knn_query(client: redis.Redis, redis_prefix: str) -> None:
    index = f"{redis_prefix}idx"
    schema = "SCHEMA v VECTOR FLAT 6 TYPE FLOAT32 DIM 2 DISTANCE_METRIC COSINE"
    client.execute_command(
        *f"FT.CREATE {index} ON HASH PREFIX 1 {redis_prefix}doc: {schema}".split()
    )
    near = b"\x00\x00\x80\x3f\x00\x00\x00\x00"  # [1.0, 0.0] as little-endian float32
    far = b"\x00\x00\x00\x00\x00\x00\x80\x3f"  # [0.0, 1.0]
    client.hset(f"{redis_prefix}doc:near", mapping={"v": near})
    client.hset(f"{redis_prefix}doc:far", mapping={"v": far})
    query = Query("*=>[KNN 1 @v $q]").return_fields("id").dialect(2)
    result = client.ft(index).search(query, query_params={"q": near})
    assert result.total == 1
    assert result.docs[0].id == f"{redis_prefix}doc:near"


def test_prefix_is_fresh_and_namespaced(client: redis.Redis, redis_prefix: str) -> None:
    assert re.fullmatch(r"t:[0-9a-f]{12}:", redis_prefix)
    assert list(client.scan_iter(match=f"{redis_prefix}*")) == []


def test_delete_redis_prefix_removes_only_that_prefix(
    client: redis.Redis, redis_url: str, redis_prefix: str
) -> None:
    doomed = f"{redis_prefix}doomed:"
    client.set(f"{doomed}k1", "v")
    client.hset(f"{doomed}k2", mapping={"f": "x"})
    client.set(f"{redis_prefix}kept", "v")
    client.execute_command(
        "FT.CREATE", f"{doomed}idx", "ON", "HASH", "PREFIX", "1", doomed, "SCHEMA", "f", "TEXT"
    )
    delete_redis_prefix(redis_url, doomed)
    assert client.exists(f"{doomed}k1", f"{doomed}k2") == 0
    assert f"{doomed}idx".encode() not in client.execute_command("FT._LIST")
    assert client.get(f"{redis_prefix}kept") == b"v"
