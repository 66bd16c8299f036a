"""Configuration from the ``VLLM_*`` environment (and an optional ``.env``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConfigError(Exception):
    """A configuration value is invalid; the message is one line and names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VLLM_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    base_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://localhost:8000/v1"), description="vLLM's OpenAI base URL"
    )
    model: str | None = Field(default=None, description="default model; unset = the served model")
    api_key: SecretStr | None = Field(default=None, description="key vLLM expects (--api-key)")
    wrapper_host: str = "0.0.0.0"
    wrapper_port: int = Field(default=8001, ge=1, le=65535)
    wrapper_api_key: SecretStr | None = Field(default=None, description="Bearer key clients must send")
    # A Modal proxy auth token (wk-…/ws-…), sent as Modal-Key/Modal-Secret to a vLLM behind Modal's proxy auth.
    modal_key: SecretStr | None = Field(default=None, description="Modal-Key header sent to vLLM")
    modal_secret: SecretStr | None = Field(default=None, validate_default=True, description="Modal-Secret header sent to vLLM")
    default_max_tokens: int = Field(default=2048, ge=1, le=10_000_000)
    default_temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_retries: int = Field(default=3, ge=0, le=20)
    timeout: float = Field(default=60.0, gt=0.0, le=86_400.0)
    # Additions beyond the original contract.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    health_timeout: float = Field(default=2.0, gt=0.0, le=60.0)
    health_cache_seconds: float = Field(default=1.0, ge=0.0, le=300.0)
    retry_backoff: float = Field(default=0.2, ge=0.0, le=30.0)
    workers: int = Field(default=1, ge=1, le=256)
    # Scale-to-zero on Kubernetes (wrapper/scaling): off unless VLLM_IDLE_TIMEOUT > 0.
    idle_timeout: float = Field(default=0.0, ge=0.0, le=30 * 86_400.0, description="idle seconds before vLLM scales to 0")
    wake_timeout: float = Field(default=600.0, ge=0.0, le=86_400.0, description="hold a request this long while vLLM wakes")
    k8s_namespace: str | None = Field(default=None, description="namespace of the vLLM StatefulSet (default: the pod's)")
    k8s_statefulset: str | None = Field(default=None, validate_default=True, description="the vLLM StatefulSet")
    k8s_api_url: AnyHttpUrl | None = Field(default=None, description="API server URL (default: in-cluster)")

    @field_validator("model", "api_key", "wrapper_api_key", "modal_key", "modal_secret", "k8s_namespace", "k8s_statefulset", "k8s_api_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _never(cls, v: object) -> object:
        return 0.0 if isinstance(v, str) and v.strip().lower() in ("", "0", "never", "off") else v

    @field_validator("k8s_namespace", "k8s_statefulset")
    @classmethod
    def _k8s_name(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and not _DNS_LABEL.match(v):
            raise ValueError("must be a Kubernetes name (lowercase letters, digits, '-', at most 63)")
        if v is None and info.field_name == "k8s_statefulset" and (info.data.get("idle_timeout") or 0) > 0:
            raise ValueError("required when VLLM_IDLE_TIMEOUT > 0 (the vLLM StatefulSet to scale)")
        return v

    @field_validator("modal_secret")
    @classmethod
    def _modal_token_pair(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if (v is None) != (info.data.get("modal_key") is None):
            raise ValueError("VLLM_MODAL_KEY and VLLM_MODAL_SECRET are a pair: set both or neither")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @property
    def base(self) -> str:
        """The base URL without a trailing slash (``.../v1``)."""
        return str(self.base_url).rstrip("/")

    @property
    def root(self) -> str:
        """The server root: the base URL without its ``/v1`` suffix (where vLLM serves ``/health``)."""
        b = self.base
        return b[: -len("/v1")] if b.endswith("/v1") else b


def load_settings(**overrides: object) -> Settings:
    """Read the settings; raise :class:`ConfigError` with a one-line message on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err.get("loc") else "?"
            # Never echo the offending value: it may be a secret.
            parts.append(f"VLLM_{field.upper()}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(parts)) from None
