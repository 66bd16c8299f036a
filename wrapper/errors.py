"""OpenAI-shaped errors: every error body is ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

# Error "type" names follow vLLM's convention (the pass-through routes return vLLM's own errors).
_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    408: "RequestTimeoutError",
    409: "ConflictError",
    413: "RequestTooLargeError",
    415: "UnsupportedMediaTypeError",
    422: "UnprocessableEntityError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def error_type(status: int) -> str:
    return _TYPES.get(status, "BadRequestError" if status < 500 else "InternalServerError")


class APIError(Exception):
    """Raised anywhere in the wrapper; rendered as an OpenAI error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type(status)
        self.param = param
        self.code = code if code is not None else status
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> Response:
        return Response(
            orjson.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )


def error_body(message: str, type: str, param: str | None = None, code: str | int | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def normalize_error(status: int, body: bytes) -> bytes:
    """Return ``body`` unchanged if it already is an OpenAI error, else wrap what it says."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        err = parsed.get("error")
        if isinstance(err, dict) and "message" in err:
            return body
        detail = err if isinstance(err, str) else parsed.get("detail", parsed.get("message"))
        message = detail if isinstance(detail, str) else orjson.dumps(parsed).decode()[:500]
    else:
        message = body.decode("utf-8", "replace")[:500] if body else f"upstream returned HTTP {status}"
    return orjson.dumps(error_body(message or f"HTTP {status}", error_type(status), None, status))


def body_too_large(limit: int, *, close: bool = True) -> APIError:
    """413 for a body over ``limit``. ``close``: part of it was read and the rest is not wanted."""
    return APIError(
        413,
        f"request body larger than {limit} bytes",
        code="request_too_large",
        headers={"Connection": "close"} if close else None,
    )


def body_too_slow(timeout: float) -> APIError:
    """408 for a body that did not arrive within ``timeout`` seconds."""
    return APIError(
        408,
        f"request body not received within {timeout:g} s",
        code="request_timeout",
        headers={"Connection": "close"},
    )
