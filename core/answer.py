"""One accumulator for an answer: folds the router's events into the text the user should read.

`Router.stream()` yields `Delta`s, `Restart`s and one `Done`. What the user should be reading at
any moment is the live text of the provider answering now (a `Restart` voids what was shown),
and, once `Done` arrives, the result's text, whatever its tier: an offline, stale, declined or
unavailable answer arrives with `Done` alone, with no `Delta` of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from .router import Delta, Done, Event, Restart, Result


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
