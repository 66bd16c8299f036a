"""OpenAI-compatible gateway in front of a vLLM server.

A runtime service: it never imports pulumi or ``components``.
"""

__version__ = "0.1.0"
