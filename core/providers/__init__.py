"""Provider adapters, one module per SDK, each declaring what its kind is (`ProviderKind`).

Light on purpose: config and the CLI read the kinds' records through `kinds()` without loading
any SDK (each takes 0.5–1.2 s to import, and a chain rarely needs all four); an adapter imports
its SDK when it makes its first client. `build()` makes the right adapter for a configured entry.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import ProviderEntry
    from .base import Provider, ProviderKind

# The adapters (module: class), in the order a chain built from the environment tries them.
ADAPTERS = {"anthropic": "AnthropicProvider", "openai": "OpenAIProvider", "gemini": "GeminiProvider",
            "ollama": "OllamaProvider", "local": "LocalProvider"}
# The wire protocols, one per SDK (each has a simulator); `local` speaks OpenAI's, from a GGUF model
# run on this machine by a child process (core/local_model.py).
WIRE_KINDS = ("anthropic", "openai", "gemini", "ollama")


def adapter_class(kind: str) -> type[Provider]:
    return getattr(importlib.import_module(f"{__name__}.{kind}"), ADAPTERS[kind])


@functools.cache
def kinds() -> Mapping[str, ProviderKind]:
    """Every provider kind's record, as its adapter declares it, in priority order."""
    return MappingProxyType({kind: adapter_class(kind).info for kind in ADAPTERS})


def build(entry: ProviderEntry, *, transport: Any = None) -> Provider:
    """One long-lived, thread-safe adapter (and SDK client) for a configured entry."""
    return adapter_class(entry.kind)(entry, transport=transport)


__all__ = ["ADAPTERS", "WIRE_KINDS", "adapter_class", "build", "kinds"]
