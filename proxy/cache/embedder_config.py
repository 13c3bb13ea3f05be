"""Settings models of the embedders, apart from the embedders themselves: loading the config
(`meterline check-config`, every reload) must not import onnxruntime, tokenizers or aiohttp."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LocalEmbedderSettings(BaseModel):
    """Tuning knobs of the local ONNX embedder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=256, ge=8, le=512)
    max_batch: int = Field(default=32, ge=1, le=1024)
    # Coalesced texts are length-sorted and run in sub-batches of this size, so one long prompt
    # does not make every short one in the batch pay for its padding.
    sub_batch: int = Field(default=8, ge=1, le=1024)
    # 0 = natural batching: a lone request runs at once, and whatever arrives while a batch is
    # encoding forms the next batch. A wait only adds latency when the machine is idle.
    max_wait_seconds: float = Field(default=0.0, ge=0.0, le=1.0)
    threads: int = Field(default=1, ge=1, le=64)


class OpenAIEmbedderSettings(BaseModel):
    """Where and how to call an OpenAI-compatible embeddings endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    model: str
    api_key: str | None = None
    dim: int = Field(ge=1)
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_batch: int = Field(default=256, ge=1)
