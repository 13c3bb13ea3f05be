"""Upstream providers and the model -> provider-target map, from rules/providers.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, PrivateAttr, model_validator

from proxy.config.errors import ConfigError, load_model


class Provider(BaseModel):
    """Any OpenAI-compatible base URL; the credential comes from an environment variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: HttpUrl
    api_key_env: str | None = None
    kind: Literal["openai", "azure"] = "openai"
    api_version: str | None = None  # azure: ?api-version=
    timeout_s: float = Field(600.0, gt=0)
    connect_timeout_s: float = Field(10.0, gt=0)
    max_connections: int = Field(512, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)
    _base: str = PrivateAttr(default="")

    def model_post_init(self, context: object) -> None:
        self._base = str(self.base_url).rstrip("/")

    def url(self, path: str, target_model: str) -> str:
        base = self._base
        if self.kind == "azure":
            url = f"{base}/openai/deployments/{target_model}{path}"
            return f"{url}?api-version={self.api_version}" if self.api_version else url
        return base + path


class TargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str
    model: str | None = None  # upstream model name; defaults to the public name


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: tuple[TargetConfig, ...] = Field(min_length=1)
    owned_by: str = "meterline"
    # what the model accepts in messages; the chat page sends images only to "image" models
    input_modalities: tuple[Literal["text", "image"], ...] = ("text",)


class ProvidersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: dict[str, Provider] = Field(min_length=1)
    models: dict[str, ModelEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _targets_name_providers(self) -> ProvidersConfig:
        for name, entry in self.models.items():
            for i, target in enumerate(entry.targets):
                if target.provider not in self.providers:
                    raise ValueError(
                        f"models.{name}.targets.{i}.provider '{target.provider}' is not one of "
                        f"{sorted(self.providers)}"
                    )
        return self

    def targets_for(self, model: str) -> tuple[tuple[str, str], ...]:
        """(provider name, upstream model) pairs to try in order, or () for an unknown model."""
        entry = self.models.get(model)
        if entry is None:
            return ()
        return tuple((t.provider, t.model or model) for t in entry.targets)


def load_providers(path: Path) -> ProvidersConfig:
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    return load_model(ProvidersConfig, path)
