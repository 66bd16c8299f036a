"""Structured JSON logs (one object per line on stderr) with the request id."""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import orjson

_STD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and k != "color_message" and not k.startswith("_"):
                out[k] = v
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


_second: tuple[int, str] = (-1, "")  # (whole second, its strftime)
_stamp: tuple[int, str] = (-1, "")  # (millisecond, its whole timestamp)


def _now() -> str:
    """The time as the other lines write it. Under load many lines end in the same millisecond:
    the timestamp is formatted once per millisecond, and ``strftime`` runs once a second."""
    global _second, _stamp
    ms = int(time.time() * 1000)
    if ms != _stamp[0]:
        s, frac = divmod(ms, 1000)
        if s != _second[0]:
            _second = (s, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)))
        _stamp = (ms, f"{_second[1]}.{frac:03d}Z")
    return _stamp[1]


class AccessLog:
    """The per-request line, written without building a LogRecord (it is on the hot path).

    Same JSON shape as the other lines; goes wherever the ``wrapper.access`` logger's
    handlers would write (stderr), and obeys that logger's level. The lines of the requests
    that end in one turn of the event loop leave in one write at the end of that turn: under
    load that is one system call for many requests, and no line waits longer than the turn.
    """

    def __init__(self) -> None:
        self.logger = logging.getLogger("wrapper.access")
        self._pending: list[bytes] = []

    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def write(self, request_id: str, method: str, path: str, status: int, duration_ms: float) -> None:
        line = orjson.dumps(
            {
                "ts": _now(),
                "level": "INFO",
                "logger": "wrapper.access",
                "msg": "request",
                "request_id": request_id,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
            }
        )
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: write it now
                self.flush()

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        lines.append(b"")
        data = b"\n".join(lines)
        stderr = sys.stderr
        try:
            # Bytes straight to stderr's byte layer (not decoded here to be encoded again), after
            # its text layer is flushed, so that lines written through it (logging's, a print's)
            # stay in order.
            buffer = getattr(stderr, "buffer", None)
            if buffer is None:  # a replaced sys.stderr (a test's capture)
                stderr.write(data.decode())
            else:
                stderr.flush()
                view = memoryview(data)
                while view:  # stderr's byte layer is a raw FileIO: a write may take part of it
                    written = buffer.write(view)
                    if not written:  # pragma: no cover - a non-blocking stderr that is full
                        break
                    view = view[written:]
                buffer.flush()
        except (OSError, ValueError):  # pragma: no cover - closed stderr
            pass


def setup_logging(level: str = "INFO") -> None:
    # Cheaper records: no caller lookup, thread or process names (not in our output anyway).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
