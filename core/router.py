"""The router: runs a request down the priority chain and always ends with a `Result`.

`stream()` yields events — `Delta` text, `Restart` when a provider failed mid-answer and the
text so far must be replaced, and one final `Done` — and never raises to its caller.
`ask()` is derived from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from .chat import ChatRequest, StreamEnd, TextDelta, Usage
from .config import Config
from .errors import ErrorKind, ProviderError
from .providers import Provider, build

TIERS = ("provider", "cache", "stale_cache", "offline", "declined", "unavailable")


@dataclass(frozen=True)
class Attempt:
    """One try at one provider, as shown in the failover timeline."""

    provider: str
    model: str
    outcome: str  # "ok" | "error" | "declined" | "skipped"
    error_kind: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    detail: str = ""  # a short reason for people; never message content or keys


@dataclass(frozen=True)
class Result:
    text: str
    complete: bool
    tier: str
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    attempts: tuple[Attempt, ...] = ()
    elapsed_ms: float = 0.0
    finish_reason: str | None = None
    notice: str = ""  # why the answer is not a normal one (declined, unavailable, cut at max tokens)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["usage"] = self.usage.as_dict() if self.usage else None
        d["attempts"] = [asdict(a) for a in self.attempts]
        return d


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Restart:
    """A provider failed after text was shown: discard it; `provider` answers from scratch."""

    failed: str
    provider: str
    reason: str


@dataclass(frozen=True)
class Done:
    result: Result


Event = Delta | Restart | Done


@dataclass(frozen=True)
class ProviderStatus:
    name: str
    kind: str
    model: str
    endpoint: str
    key: str  # masked
    health: str  # "ok" | "down" | "no key" | "unknown"
    detail: str = ""
    probe_ms: float | None = None
    extra: dict = field(default_factory=dict)


def unavailable_text(question: str) -> str:
    q = question.strip()
    shown = q if len(q) <= 300 else q[:300] + "…"
    return ("Sorry — none of our AI providers can answer right now. Your question is kept and you can "
            f"send it again in a moment:\n\n> {shown}")


def declined_text(provider: str, why: str) -> str:
    return (f"This request was declined by {provider}'s content policy ({why}). It was not sent to "
            "other providers. Try rephrasing the question.")


class Router:
    """Answers requests from the first provider in the chain that can."""

    def __init__(
        self,
        config: Config,
        *,
        providers: Sequence[Provider] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.providers = list(providers) if providers is not None else [build(e) for e in config.providers]
        self.clock = clock

    def close(self) -> None:
        for p in self.providers:
            p.close()

    # -- answering ------------------------------------------------------------------------------
    def ask(self, request: ChatRequest) -> Result:
        for event in self.stream(request):
            if isinstance(event, Done):
                return event.result
        raise AssertionError("stream() always ends with Done")  # pragma: no cover

    def stream(self, request: ChatRequest) -> Iterator[Event]:
        start = self.clock()
        deadline = start + self.config.policy["timeouts"]["request"]
        attempts: list[Attempt] = []
        shown = False  # text from a failed provider reached the caller
        failed_mid: tuple[str, str] | None = None

        def done(**kw) -> Done:
            return Done(Result(attempts=tuple(attempts), elapsed_ms=_ms(self.clock() - start), **kw))

        for provider in self.providers:
            if self.clock() >= deadline:
                attempts.append(Attempt(provider.name, provider.model, "skipped", detail="request deadline reached"))
                continue
            if failed_mid is not None:
                yield Restart(failed_mid[0], provider.name, failed_mid[1])
                failed_mid = None
            t0 = self.clock()
            ttft = None
            pieces: list[str] = []
            try:
                for item in provider.stream(request):
                    if isinstance(item, TextDelta):
                        if ttft is None:
                            ttft = _ms(self.clock() - t0)
                        pieces.append(item.text)
                        shown = True
                        yield Delta(item.text)
                    elif isinstance(item, StreamEnd):
                        attempts.append(Attempt(provider.name, item.model, "ok", latency_ms=_ms(self.clock() - t0),
                                                ttft_ms=ttft))
                        complete = item.finish_reason != "length"
                        yield done(text="".join(pieces), complete=complete, tier="provider", provider=provider.name,
                                   model=item.model, usage=item.usage, finish_reason=item.finish_reason,
                                   notice="" if complete else "The answer stopped at the max-tokens limit.")
                        return
            except ProviderError as e:
                outcome = "declined" if e.kind is ErrorKind.CONTENT_FILTERED else "error"
                attempts.append(Attempt(provider.name, provider.model, outcome, e.kind.value,
                                        _ms(self.clock() - t0), ttft, e.message[:300]))
                if e.kind is ErrorKind.CONTENT_FILTERED:
                    yield done(text=declined_text(provider.name, e.message), complete=False, tier="declined",
                               provider=provider.name, model=provider.model, finish_reason="content_filter",
                               notice=e.message)
                    return
                if pieces:
                    failed_mid = (provider.name, e.kind.value)
                if not e.kind.fallover:
                    break
        if shown:
            yield Restart(failed_mid[0] if failed_mid else "", "", "no provider could finish the answer")
        yield done(text=unavailable_text(request.last_user_text()), complete=False, tier="unavailable",
                   notice="No provider could answer.")

    # -- health ---------------------------------------------------------------------------------
    def status(self, *, probe: bool = True) -> list[ProviderStatus]:
        """Each entry's configuration and, with `probe`, a cheap live health check (in parallel)."""
        def one(p: Provider) -> ProviderStatus:
            e = p.entry
            key = e.api_key.masked() if e.api_key else ("missing" if p.info.needs_key else "not needed")
            base = dict(name=p.name, kind=p.kind, model=p.model, endpoint=e.endpoint, key=key)
            if not probe:
                return ProviderStatus(health="unknown", **base)
            t0 = time.monotonic()
            try:
                p.probe()
            except ProviderError as err:
                health = "no key" if err.kind is ErrorKind.AUTH and e.api_key is None else "down"
                return ProviderStatus(health=health, detail=f"{err.kind.value}: {err.message[:200]}",
                                      probe_ms=_ms(time.monotonic() - t0), **base)
            return ProviderStatus(health="ok", probe_ms=_ms(time.monotonic() - t0), **base)

        if not self.providers:
            return []
        with ThreadPoolExecutor(max_workers=len(self.providers)) as pool:
            return list(pool.map(one, self.providers))


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
