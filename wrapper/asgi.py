"""ASGI entry for multi-worker or external servers: ``uvicorn wrapper.asgi:app``."""

from .app import create_app
from .logs import setup_logging
from .settings import load_settings

_settings = load_settings()
setup_logging(_settings.log_level)
app = create_app(_settings)
