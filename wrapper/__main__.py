"""``vllm-wrapper`` / ``python -m wrapper``: run the wrapper with uvicorn (see ``wrapper.server``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from .settings import ConfigError, load_settings

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"vllm-wrapper: {exc}", file=sys.stderr)
        return 2

    from .logs import setup_logging
    from .server import install_guard, serve, uvicorn_options

    setup_logging(settings.log_level)
    if settings.workers > 1:  # each worker installs its own guard (wrapper/asgi.py)
        import uvicorn

        uvicorn.run("wrapper.asgi:app", workers=settings.workers, **uvicorn_options(settings))
    else:
        from .app import create_app

        app = create_app(settings)
        install_guard(settings, app.metrics.registry)
        serve(app, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
