"""Provider adapters, one per SDK. `build()` makes the right one for a configured entry.

Adapters are imported on first use: each SDK takes 0.5–1.2 s to import, and a chain rarely
needs all four.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..config import ProviderEntry
from .base import Provider, StreamState

_MODULES = {"anthropic": "AnthropicProvider", "openai": "OpenAIProvider", "gemini": "GeminiProvider",
            "ollama": "OllamaProvider"}


def adapter_class(kind: str) -> type[Provider]:
    module = importlib.import_module(f"{__name__}.{kind}")
    return getattr(module, _MODULES[kind])


def build(entry: ProviderEntry, *, transport: Any = None) -> Provider:
    """One long-lived, thread-safe adapter (and SDK client) for a configured entry."""
    return adapter_class(entry.kind)(entry, transport=transport)


__all__ = ["Provider", "StreamState", "adapter_class", "build"]
