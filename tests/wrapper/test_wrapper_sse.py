"""The /chat stream encoding itself (pure functions; the servers are covered elsewhere)."""

from __future__ import annotations

import pytest

from wrapper.sse import DONE, EventSplitter, decode_chat_stream, encode_piece, event_data

PIECES = ["plain", " lead", "a\nb", "\n", "\n\n", "end\n", "[DONE]", "x[DONE]y", "l1\n[DONE]\nl3",
          "[DONE][DONE]", "é中😀", "tab\there", "data: inside"]


@pytest.mark.parametrize("piece", PIECES)
def test_piece_round_trips_and_never_fakes_the_end(piece):
    raw = (encode_piece(piece) + DONE).decode()
    assert decode_chat_stream(raw) == piece
    assert raw.splitlines().count("data: [DONE]") == 1 and raw.endswith("data: [DONE]\n\n")


def test_plain_piece_is_one_line_for_old_clients():
    assert encode_piece("Hello world") == b"data: Hello world\n\n"


def test_carriage_returns_become_newlines():
    assert decode_chat_stream((encode_piece("a\r\nb\rc") + DONE).decode()) == "a\nb\nc"


def test_splitter_handles_arbitrary_chunking():
    stream = b"data: one\n\ndata: two\ndata: lines\n\r\ndata: [DONE]\n\n"
    for size in (1, 2, 3, 7, len(stream)):
        sp = EventSplitter()
        events = []
        for i in range(0, len(stream), size):
            events += sp.feed(stream[i : i + size])
        assert [event_data(e) for e in events] == [b"one", b"two\nlines", b"[DONE]"]


def test_error_event_is_reported_by_the_reference_decoder():
    with pytest.raises(ValueError):
        decode_chat_stream('data: hi\n\nevent: error\ndata: {"error": {}}\n\n')
