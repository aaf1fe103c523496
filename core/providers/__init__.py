"""Provider adapters, one per SDK. `build()` makes the right one for a configured entry."""

from __future__ import annotations

from typing import Any

from ..config import ProviderEntry
from .anthropic import AnthropicProvider
from .base import Provider, StreamState
from .gemini import GeminiProvider
from .ollama import OllamaProvider
from .openai import OpenAIProvider

ADAPTERS: dict[str, type[Provider]] = {
    cls.kind: cls for cls in (AnthropicProvider, OpenAIProvider, GeminiProvider, OllamaProvider)
}


def build(entry: ProviderEntry, *, transport: Any = None) -> Provider:
    """One long-lived, thread-safe adapter (and SDK client) for a configured entry."""
    return ADAPTERS[entry.kind](entry, transport=transport)


__all__ = ["ADAPTERS", "Provider", "StreamState", "build"]
