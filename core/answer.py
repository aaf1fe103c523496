"""What a caller of the router receives: its events, the final `Result`, and one accumulator
(`Answer`) that folds the events into the text the user should read.

`Router.stream()` yields `Delta`s, `Restart`s and one `Done`. What the user should be reading at
any moment is the live text of the provider answering now (a `Restart` voids what was shown),
and, once `Done` arrives, the result's text, whatever its tier: an offline, stale, declined or
unavailable answer arrives with `Done` alone, with no `Delta` of its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .attempt import Attempt
from .messages import TextDelta, Usage
from .tiers import Tier


@dataclass(frozen=True)
class Result:
    text: str
    complete: bool
    tier: Tier
    provider: str | None = None
    model: str | None = None
    usage: Usage | None = None
    attempts: tuple[Attempt, ...] = ()
    elapsed_ms: float = 0.0
    finish_reason: str | None = None
    notice: str = ""  # why the answer is not a normal one (declined, stale, offline, unavailable, cut)
    ttft_ms: float | None = None  # time to the first text the caller kept
    stopped: bool = False  # the caller stopped it (Stream.stop): `text` is what had arrived

    def as_dict(self) -> dict:
        """Plain JSON values (the tier and outcomes as their stable names)."""
        d = asdict(self)
        d["tier"] = self.tier.value
        d["usage"] = self.usage.as_dict() if self.usage else None
        d["attempts"] = [a.as_dict() for a in self.attempts]
        return d


# A piece of the answer's text. The router yields its leader's pieces as the provider's stream
# gave them: one object per chunk, not a copy of each.
Delta = TextDelta


@dataclass(frozen=True)
class Restart:
    """`failed` broke off after its text was shown: discard that text. `provider` answers from
    scratch; None when nobody will and a degraded answer follows."""

    failed: str
    provider: str | None
    reason: str


@dataclass(frozen=True)
class Done:
    result: Result


Event = Delta | Restart | Done


@dataclass(frozen=True)
class Change:
    """How the visible text changed with one event: `added` goes after what is shown, or, when
    `replaced`, everything shown so far is void and `added` is the whole text from now on."""

    added: str
    replaced: bool = False


class Answer:
    """Feed it one request's events in order; read `text`, `switches` and `result`."""

    def __init__(self) -> None:
        self._pieces: list[str] = []
        self.switches: list[Restart] = []
        self.result: Result | None = None

    @property
    def text(self) -> str:
        return "".join(self._pieces)

    def add(self, event: Event) -> Change:
        if isinstance(event, Delta):
            self._pieces.append(event.text)
            return Change(event.text)
        if isinstance(event, Restart):
            self.switches.append(event)
            self._pieces.clear()
            return Change("", replaced=True)
        if isinstance(event, Done):
            self.result = event.result
            shown, final = self.text, event.result.text
            self._pieces[:] = [final]
            if final.startswith(shown):
                return Change(final[len(shown):])
            return Change(final, replaced=True)
        raise TypeError(f"not a router event: {event!r}")
