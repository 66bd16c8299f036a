"""Configuration from the ``VLLM_*`` environment (and an optional ``.env``)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import AnyHttpUrl, Field, SecretStr, TypeAdapter, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)


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

    base_url: str = Field(
        default="http://localhost:8000/v1",
        description="vLLM's OpenAI base URL; several replicas: URLs separated by commas (wrapper/routing)",
    )
    model: str | None = Field(default=None, description="default model; unset = the served model")
    api_key: SecretStr | None = Field(default=None, description="key vLLM expects (--api-key)")
    wrapper_host: str = "0.0.0.0"
    wrapper_port: int = Field(default=8001, ge=1, le=65535)
    wrapper_api_key: SecretStr | None = Field(default=None, description="Bearer key clients must send")
    # A Modal proxy auth token (wk-…/ws-…), sent as Modal-Key/Modal-Secret to a vLLM behind Modal's proxy auth.
    modal_key: SecretStr | None = Field(default=None, description="Modal-Key header sent to vLLM")
    modal_secret: SecretStr | None = Field(
        default=None, validate_default=True, description="Modal-Secret header sent to vLLM"
    )
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
    # Connections (wrapper/server.py): what a client may hold without sending a request.
    max_connections: int = Field(default=4096, ge=16, le=1_000_000, description="open client connections per process")
    header_timeout: float = Field(default=10.0, gt=0.0, le=3600.0, description="seconds to receive a request's head")
    body_timeout: float = Field(default=60.0, gt=0.0, le=3600.0, description="seconds to receive a request's body")
    keepalive_timeout: int = Field(
        default=5, ge=1, le=3600, description="idle seconds before a keep-alive connection closes"
    )
    # Streamed requests vLLM has not answered yet (wrapper/keepalive.py): SSE headers, then comments.
    stream_keepalive_after: float = Field(
        default=5.0, ge=0.0, le=3600.0, description="seconds before early SSE headers (0 = never)"
    )
    stream_keepalive_interval: float = Field(
        default=15.0, gt=0.0, le=3600.0, description="seconds between ': keep-alive' comments"
    )
    # Request caps and rate limits (wrapper/limits.py); unset = no cap.
    max_n: int | None = Field(default=4, ge=1, le=1000, description="largest 'n' a request may ask for")
    max_completion_tokens: int | None = Field(default=None, ge=1, le=10_000_000, description="largest max_tokens")
    max_prompt_chars: int | None = Field(
        default=None, ge=1, le=1_000_000_000, description="largest prompt, in characters"
    )
    rate_limit_requests: int | None = Field(
        default=None, ge=1, le=10_000_000, description="requests per minute per caller"
    )
    rate_limit_tokens: int | None = Field(
        default=None, ge=1, le=1_000_000_000, description="tokens per minute per caller"
    )
    # Scale-to-zero on Kubernetes (wrapper/scaling): off unless VLLM_IDLE_TIMEOUT > 0.
    idle_timeout: float = Field(
        default=0.0, ge=0.0, le=30 * 86_400.0, description="idle seconds before vLLM scales to 0"
    )
    wake_timeout: float = Field(
        default=600.0, ge=0.0, le=86_400.0, description="hold a request this long while vLLM wakes"
    )
    k8s_namespace: str | None = Field(
        default=None, description="namespace of the vLLM StatefulSet (default: the pod's)"
    )
    k8s_statefulset: str | None = Field(default=None, validate_default=True, description="the vLLM StatefulSet")
    k8s_api_url: AnyHttpUrl | None = Field(default=None, description="API server URL (default: in-cluster)")
    k8s_lease: str | None = Field(default=None, description="the activity Lease (default: <statefulset>-activity)")
    k8s_replicas: int = Field(
        default=1, ge=1, le=1000, description="vLLM replicas a wake from zero restores (vllm.replicas)"
    )
    # Autoscaling between min and max replicas (wrapper/scaling/autoscale.py): off unless
    # VLLM_AUTOSCALE_MAX > 0. VLLM_BASE_URL then lists each replica by ordinal (pod -0, -1, ...).
    autoscale_min: int = Field(default=1, ge=0, le=1000, description="replicas kept while vLLM is up (0: idle timeout)")
    autoscale_max: int = Field(default=0, ge=0, le=1000, description="replicas at most; 0 = autoscaling off")
    autoscale_target_in_flight: float = Field(
        default=8.0, gt=0.0, le=100_000.0, description="running + waiting requests per ready replica to aim for"
    )
    autoscale_window: float = Field(
        default=10.0, ge=0.0, le=3600.0, description="seconds demand must stay above the target before a scale-up"
    )
    autoscale_scale_down_delay: float = Field(
        default=300.0, ge=0.0, le=86_400.0, description="seconds of low demand before removing one replica"
    )
    autoscale_drain_timeout: float = Field(
        default=30.0, ge=0.0, le=3600.0, description="longest wait for a replica to drain (vllm.shutdownTimeout)"
    )
    # Several vLLM replicas (wrapper/routing): how to pick one, and how to find them.
    routing: Literal["prefix", "least-load", "round-robin"] | None = Field(
        default=None, description="routing policy; unset = prefix with several replicas"
    )
    routing_prefix_chars: int = Field(default=2048, ge=16, le=1_000_000, description="leading prompt characters hashed")
    routing_balance: float = Field(default=2.0, ge=1.0, le=100.0, description="bounded-load factor c of prefix routing")
    eject_after: int = Field(default=3, ge=1, le=1000, description="consecutive failures that eject a replica")
    eject_seconds: float = Field(default=5.0, gt=0.0, le=3600.0, description="least time a replica stays ejected")
    discovery: Literal["static", "endpointslices"] = "static"
    discovery_service: str | None = Field(default=None, validate_default=True, description="headless Service of vLLM")
    discovery_port: str | None = Field(
        default=None, description="EndpointSlice port name or number (default: the first)"
    )

    @field_validator(
        "model",
        "api_key",
        "wrapper_api_key",
        "modal_key",
        "modal_secret",
        "k8s_namespace",
        "k8s_statefulset",
        "k8s_lease",
        "k8s_api_url",
        "routing",
        "discovery_service",
        "discovery_port",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        if isinstance(v, str) and not v.strip():
            return None
        return v

    @field_validator(
        "max_n", "max_completion_tokens", "max_prompt_chars", "rate_limit_requests", "rate_limit_tokens", mode="before"
    )
    @classmethod
    def _no_cap(cls, v: object) -> object:
        return None if isinstance(v, str) and v.strip().lower() in ("", "0", "none", "off", "unlimited") else v

    @field_validator("idle_timeout", mode="before")
    @classmethod
    def _never(cls, v: object) -> object:
        return 0.0 if isinstance(v, str) and v.strip().lower() in ("", "0", "never", "off") else v

    @field_validator("base_url")
    @classmethod
    def _base_urls(cls, v: str) -> str:
        urls = [u.strip() for u in v.split(",")]
        if not all(urls):
            raise ValueError("an empty URL in the list; separate base URLs with single commas")
        out = []
        for u in urls:
            try:
                url = _HTTP_URL.validate_python(u)
            except ValidationError:
                raise ValueError("each base URL must be an http(s) URL such as http://vllm:8000/v1") from None
            # Credentials in a URL would sit beside our bearer header, and an error could echo
            # them: refuse at start-up (the key for vLLM belongs in VLLM_API_KEY).
            if url.username or url.password:
                raise ValueError("must not contain credentials (user:password@); put vLLM's key in VLLM_API_KEY")
            out.append(str(url).rstrip("/"))
        if len(set(out)) != len(out):
            raise ValueError("the same base URL appears twice")
        return ",".join(out)

    @field_validator("discovery_service")
    @classmethod
    def _discovery_service(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and not _DNS_LABEL.match(v):
            raise ValueError("must be a Kubernetes Service name (lowercase letters, digits, '-', at most 63)")
        if v is None and info.data.get("discovery") == "endpointslices":
            raise ValueError("required when VLLM_DISCOVERY=endpointslices (the headless Service of vLLM)")
        return v

    @field_validator("k8s_namespace", "k8s_statefulset", "k8s_lease")
    @classmethod
    def _k8s_name(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and not _DNS_LABEL.match(v):
            raise ValueError("must be a Kubernetes name (lowercase letters, digits, '-', at most 63)")
        if v is None and info.field_name == "k8s_statefulset" and (info.data.get("idle_timeout") or 0) > 0:
            raise ValueError("required when VLLM_IDLE_TIMEOUT > 0 (the vLLM StatefulSet to scale)")
        return v

    @field_validator("autoscale_max")
    @classmethod
    def _autoscale(cls, v: int, info: ValidationInfo) -> int:
        if v <= 0:
            return 0
        lowest = info.data.get("autoscale_min", 1)
        if lowest > v:
            raise ValueError(f"must be >= VLLM_AUTOSCALE_MIN ({lowest})")
        if not info.data.get("k8s_statefulset"):
            raise ValueError("needs VLLM_K8S_STATEFULSET (the vLLM StatefulSet to scale)")
        urls = str(info.data.get("base_url") or "").split(",")
        if len(urls) < v:
            raise ValueError(f"needs VLLM_BASE_URL to list {v} replicas by ordinal (it lists {len(urls)})")
        if lowest == 0 and not (info.data.get("idle_timeout") or 0) > 0:
            raise ValueError(
                "VLLM_AUTOSCALE_MIN=0 needs VLLM_IDLE_TIMEOUT > 0 (the idle timeout takes the last replica)"
            )
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
    def base_urls(self) -> tuple[str, ...]:
        """Each configured base URL without a trailing slash (``.../v1``)."""
        return tuple(self.base_url.split(","))

    @property
    def base(self) -> str:
        """The base URL as configured, without trailing slashes (several: comma-separated)."""
        return self.base_url

    @property
    def root(self) -> str:
        """The first server's root: its base URL without the ``/v1`` suffix (where vLLM serves ``/health``)."""
        return root_of(self.base_urls[0])


def root_of(base: str) -> str:
    """A server root from its OpenAI base URL (``http://h:8000/v1`` -> ``http://h:8000``)."""
    return base[: -len("/v1")] if base.endswith("/v1") else base


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
