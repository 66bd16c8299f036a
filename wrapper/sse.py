"""Server-Sent Events: split upstream events, and encode ``/chat`` text pieces.

``/chat`` stream format (see wrapper/README.md): each text piece is one SSE event whose
``data:`` lines, joined with ``\\n`` (the SSE rule), give the piece exactly. A piece without a
line break is a single ``data: <piece>`` line, so clients that print ``line[6:]`` keep working.
The stream ends with ``data: [DONE]``. ``\\r\\n`` and a lone ``\\r`` inside a piece become ``\\n``
(SSE treats both as line ends).
"""

from __future__ import annotations

DONE = b"data: [DONE]\n\n"


class EventSplitter:
    """Feed raw bytes; get back complete events (the bytes between blank lines)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *events, self._buf = buf.split(b"\n\n")
        return events


def event_data(event: bytes) -> bytes | None:
    """The joined ``data`` field of one event (None if it has none)."""
    if event.startswith(b"data: ") and b"\n" not in event:  # the usual single-line case
        return event[6:]
    lines = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            v = line[5:]
            lines.append(v[1:] if v.startswith(b" ") else v)
    return b"\n".join(lines) if lines else None


def encode_piece(piece: str) -> bytes:
    """One ``/chat`` text piece as an SSE event (or several, which concatenate to it)."""
    if "[DONE]" in piece:
        # No line may ever read "data: [DONE]" except the end marker: split after "[DONE"
        # (lossless, pieces only concatenate).
        return b"".join(_encode(p) for p in piece.replace("[DONE]", "[DONE\x00]").split("\x00") if p)
    return _encode(piece)


def _encode(piece: str) -> bytes:
    if "\n" not in piece and "\r" not in piece:
        return b"data: " + piece.encode() + b"\n\n"
    text = piece.replace("\r\n", "\n").replace("\r", "\n")
    return b"".join(b"data: " + line.encode() + b"\n" for line in text.split("\n")) + b"\n"


def decode_chat_stream(raw: str) -> str:
    """Reference client for the ``/chat`` stream: the full text (used by tests and the README)."""
    text: list[str] = []
    data: list[str] = []
    name = "message"
    for line in raw.replace("\r\n", "\n").split("\n"):
        if line == "":
            if data:
                piece = "\n".join(data)
                if name != "message":
                    raise ValueError(f"{name} event: {piece}")
                if piece == "[DONE]":
                    break
                text.append(piece)
            data, name = [], "message"
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            v = line[5:]
            data.append(v[1:] if v.startswith(" ") else v)
    return "".join(text)
