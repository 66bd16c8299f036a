"""``vllm-wrapper`` / ``python -m wrapper``: run the wrapper with uvicorn (uvloop + httptools)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .settings import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"vllm-wrapper: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    from .logs import setup_logging

    setup_logging(settings.log_level)
    config = dict(
        host=settings.wrapper_host,
        port=settings.wrapper_port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        log_level=settings.log_level.lower(),
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    if settings.workers > 1:
        uvicorn.run("wrapper.asgi:app", workers=settings.workers, **config)
    else:
        from .app import create_app

        uvicorn.run(create_app(settings), **config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
