"""Optional Bearer authentication (``VLLM_WRAPPER_API_KEY``), compared in constant time."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

# Paths that never need the key: probes, scraping, service info and the API docs.
OPEN_PATHS = frozenset({"/health", "/metrics", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})


class BearerAuth:
    def __init__(self, key: SecretStr | None) -> None:
        self._key = key.get_secret_value().encode() if key is not None else None

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def allowed(self, path: str, authorization: bytes | None) -> bool:
        if self._key is None or path in OPEN_PATHS:
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(token.strip(), self._key)
