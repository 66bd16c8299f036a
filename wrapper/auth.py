"""Optional Bearer authentication (``VLLM_WRAPPER_API_KEY``), compared in constant time."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

# Paths that never need the key: probes, scraping, service info and the API docs.
OPEN_PATHS = frozenset({"/health", "/metrics", "/", "/docs", "/docs/oauth2-redirect", "/openapi.json"})
DOCS_ASSETS = "/docs/assets/"  # Swagger UI's own files, served by the wrapper (wrapper/docs.py)


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(DOCS_ASSETS)


class BearerAuth:
    def __init__(self, key: SecretStr | None) -> None:
        self._key = key.get_secret_value().encode() if key is not None else None

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def check(self, authorization: bytes | None) -> bool:
        """Whether ``authorization`` is ``Bearer <key>`` (always true when no key is set)."""
        if self._key is None:
            return True
        if not authorization:
            return False
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(token.strip(), self._key)

    def allowed(self, path: str, authorization: bytes | None) -> bool:
        return is_open(path) or self.check(authorization)
