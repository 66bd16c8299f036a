"""Modal's own output around a deploy: image build logs reach `pulumi up`, and a failure says why.

`modal.enable_output()` turns on the SDK's output manager, which prints object creation and the
image build logs Modal's servers stream back (`ImageJoinStreaming`). Its consoles write to
`sys.stdout` / `sys.stderr`, so the deploy runs with both redirected into a buffer that also
echoes to the provider's stderr. When the deploy raises (an `ImageBuildError` says only "Image
build for im-… failed"), the last lines of that output are added to the exception as a note:
the dynamic provider host reports `traceback.format_exc()`, which prints notes, so the pip or
CUDA error that broke the build is in `pulumi up`'s diagnostics. The exception keeps its type.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Awaitable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")
TAIL_LINES = 60


class _Tee(io.StringIO):
    """Keeps everything written, and echoes it to ``echo`` (best effort)."""

    def __init__(self, echo: TextIO | None) -> None:
        super().__init__()
        self._echo = echo

    def write(self, text: str) -> int:
        if self._echo is not None:
            try:
                self._echo.write(text)
                self._echo.flush()
            except (OSError, ValueError):  # a closed or broken stderr must not fail the deploy
                self._echo = None
        return super().write(text)


@contextlib.contextmanager
def modal_output(echo: TextIO | None = None) -> Iterator[io.StringIO]:
    """Modal's output manager on, its output kept (and echoed to ``echo``)."""
    import modal

    buffer = _Tee(echo)
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer), modal.enable_output():
        yield buffer


def tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


async def with_modal_output(call: Awaitable[T], echo: TextIO | None = None) -> T:
    """Await ``call`` (a deploy) with Modal's output on; a failure carries its last lines."""
    with modal_output(sys.stderr if echo is None else echo) as out:
        try:
            return await call
        except Exception as exc:
            last = tail(out.getvalue())
            if last:
                exc.add_note(f"Modal's output (last {TAIL_LINES} lines at most):\n{last}")
            raise
