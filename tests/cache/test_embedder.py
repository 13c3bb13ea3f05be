from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from proxy.cache.embedder import (
    EmbeddingError,
    LocalEmbedder,
    LocalEmbedderSettings,
    OnnxEncoder,
    OpenAIEmbedder,
    OpenAIEmbedderSettings,
    default_tokenizer_path,
)


@pytest.fixture(scope="module")
def encoder() -> OnnxEncoder:
    return OnnxEncoder(threads=1)


def test_vendored_tokenizer_is_the_audited_file() -> None:
    digest = hashlib.sha256(default_tokenizer_path().read_bytes()).hexdigest()
    assert digest.startswith("be50c362") and digest.endswith("2037")


def test_vectors_are_unit_length_and_meaningful(encoder: OnnxEncoder) -> None:
    vectors = encoder.encode(
        [
            "How do I reset my password?",
            "What's the way to reset my password?",
            "Best pizza in Rome",
        ]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.85 > 0.3 > sims[0, 2]


def test_padding_does_not_change_a_vector(encoder: OnnxEncoder) -> None:
    alone = encoder.encode(["short text"])[0]
    padded = encoder.encode(["short text", "a much longer text " * 20])[0]
    np.testing.assert_allclose(alone, padded, atol=1e-4)


def test_sorted_batches_keep_input_order(encoder: OnnxEncoder) -> None:
    texts = ["ccc ccc ccc ccc", "a", "bb bb", "dddd dddd dddd dddd dddd dddd"]
    seen: list[tuple[int, int]] = []
    out = encoder.encode_sorted(texts, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_allclose(out, encoder.encode(texts), atol=1e-4)
    assert seen == [(2, 4), (4, 4)]
    assert encoder.encode([]).shape == (0, 384)


def test_concurrent_calls_are_coalesced_into_batches(encoder: OnnxEncoder) -> None:
    texts = [f"question number {i} about caching" for i in range(12)]

    async def run() -> tuple[list[np.ndarray], int]:
        embedder = LocalEmbedder(encoder, LocalEmbedderSettings(max_batch=8, max_wait_seconds=0.01))
        try:
            results = await asyncio.gather(*(embedder.embed([t]) for t in texts))
            return [r[0] for r in results], embedder.batches_run
        finally:
            await embedder.aclose()

    rows, batches = asyncio.run(run())
    assert batches == 2  # 12 concurrent single-text calls -> batches of 8 and 4
    np.testing.assert_allclose(np.stack(rows), encoder.encode(texts), atol=1e-4)


def test_create_loads_off_the_event_loop() -> None:
    async def run() -> np.ndarray:
        embedder = await LocalEmbedder.create(LocalEmbedderSettings(max_wait_seconds=0))
        try:
            assert (await embedder.embed([])).shape == (0, 384)
            return await embedder.embed(["hello world", "goodbye world"])
        finally:
            await embedder.aclose()

    assert asyncio.run(run()).shape == (2, 384)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/embeddings", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


async def fake_embeddings(request: web.Request) -> web.Response:
    body: dict[str, Any] = await request.json()
    assert request.headers["Authorization"] == "Bearer sk-test"
    data = [
        {"object": "embedding", "index": i, "embedding": [float(len(text)), 1.0, 0.0]}
        for i, text in enumerate(body["input"])
    ]
    return web.json_response(
        {"object": "list", "data": list(reversed(data)), "model": body["model"]}
    )


def test_openai_embedder_orders_and_normalises() -> None:
    async def run() -> np.ndarray:
        async with serve(fake_embeddings) as base_url:
            settings = OpenAIEmbedderSettings(
                base_url=base_url, model="m", api_key="sk-test", dim=3, max_batch=2
            )
            embedder = OpenAIEmbedder.create(settings)
            try:
                return await embedder.embed(["abc", "a", "abcd"])
            finally:
                await embedder.aclose()

    vectors = asyncio.run(run())
    expected = np.array([[3, 1, 0], [1, 1, 0], [4, 1, 0]], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("status", "payload", "message"),
    [
        (500, {"error": {"message": "boom"}}, "returned 500"),
        (200, {"data": []}, "must hold 1 items"),
        (200, {"data": [{"index": 0, "embedding": [1.0, 2.0]}]}, "expected dim 3"),
    ],
)
def test_openai_embedder_errors_are_clear(status: int, payload: object, message: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(payload, status=status)

    async def run() -> None:
        async with serve(handler) as base_url:
            embedder = OpenAIEmbedder.create(
                OpenAIEmbedderSettings(base_url=base_url, model="m", dim=3)
            )
            try:
                with pytest.raises(EmbeddingError, match=message):
                    await embedder.embed(["x"])
            finally:
                await embedder.aclose()

    asyncio.run(run())
