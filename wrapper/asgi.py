"""ASGI entry for multi-worker or external servers: ``uvicorn wrapper.asgi:app``.

The connection guard (``wrapper.server``) takes effect only with its protocol class, as
``vllm-wrapper`` runs it; another server brings its own connection limits.
"""

from .app import create_app
from .logs import setup_logging
from .server import install_guard
from .settings import load_settings

_settings = load_settings()
setup_logging(_settings.log_level)
app = create_app(_settings)
install_guard(_settings, app.metrics.registry)
