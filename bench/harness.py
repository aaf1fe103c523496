"""What every benchmark shares: simulated chains, the bare-SDK caller to compare against, and tables."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import anthropic
import ollama
import openai
from google import genai
from google.genai import types

from core.config import Config, Policy, ProviderEntry, Secret
from core.router import Router
from core.simulator import SimServer


KEY = "bench-key-0000000000000000"
KINDS = ("anthropic", "openai", "gemini", "ollama")
SIXTY = " ".join(f"t{i}" for i in range(60))  # a 60-chunk answer


def sixty(question: str, model: str) -> str:
    return SIXTY


def echo(question: str, model: str) -> str:
    """Deterministic and checkable: a complete answer is exactly this text."""
    return f"{model} answers {question!r}: " + " ".join(f"w{i}" for i in range(30))


@dataclass
class Chain:
    servers: list[SimServer]
    router: Router

    def close(self) -> None:
        self.router.close()
        for s in self.servers:
            s.close()


def chain(kinds, *, responder=echo, server_kw=None, **overrides) -> Chain:
    servers = [SimServer(k, responder=responder, api_key=KEY, **(server_kw or {})).start() for k in kinds]
    policy = Policy.defaults().with_(**overrides)
    entries = tuple(ProviderEntry(name=f"{s.kind}-{i}", kind=s.kind, model=f"{s.kind}-model", base_url=s.url,
                                  api_key=Secret(KEY), **policy.timeouts.for_entry()) for i, s in enumerate(servers))
    return Chain(servers, Router(Config(providers=entries, policy=policy)))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def fmt(v, unit="", digits=2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}{unit}"
    return f"{v}{unit}"


def table(title: str, header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    print(f"\n## {title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


def direct_caller(kind: str, url: str):
    """The same streamed request straight through the official SDK, as a user of it would write it."""
    msgs = [{"role": "user", "content": "hi"}]
    if kind == "anthropic":
        c = anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0)
        return lambda: [e for e in c.messages.create(model="m", max_tokens=512, messages=msgs, stream=True)]
    if kind == "openai":
        c = openai.OpenAI(api_key=KEY, base_url=url, max_retries=0)
        return lambda: [e for e in c.chat.completions.create(model="m", messages=msgs, stream=True,
                                                              stream_options={"include_usage": True})]
    if kind == "gemini":
        c = genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=url, timeout=10_000))
        return lambda: [e for e in c.models.generate_content_stream(model="m", contents="hi")]
    c = ollama.Client(host=url, headers={"authorization": f"Bearer {KEY}"})
    return lambda: [e for e in c.chat(model="m", messages=msgs, stream=True)]
