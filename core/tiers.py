"""Where an answer came from (`Tier`), and the degraded tiers that answer when no provider can.

In order, when the chain is exhausted: a stale cached answer, an offline FAQ answer, then an
honest reply that keeps the question for follow-up. A content-policy decline is its own tier: it
is reported, never routed around.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .cache import AnswerCache
    from .offline import Faq, FollowUps
    from .store.answers import StaleAnswers


class Tier(enum.StrEnum):
    """The value is the stable name used in JSON, metrics and the README."""

    PROVIDER = "provider"
    CACHE = "cache"
    STALE_CACHE = "stale_cache"
    OFFLINE = "offline"
    DECLINED = "declined"
    UNAVAILABLE = "unavailable"

    @property
    def label(self) -> str:
        """How the UI marks an answer of this tier ("" for a normal one)."""
        return _LABELS[self]

    @property
    def model_output(self) -> bool:
        """Text a model wrote, so it may go back as context in the next turn. Declines, outage
        notices and FAQ answers don't."""
        return self in (Tier.PROVIDER, Tier.CACHE, Tier.STALE_CACHE)

    @property
    def exit_status(self) -> int:
        """The CLI's: 1 when no provider could answer (the reply says so), else 0, a decline too."""
        return 1 if self is Tier.UNAVAILABLE else 0


_LABELS = {
    Tier.PROVIDER: "",
    Tier.CACHE: "🗄️ cached",
    Tier.STALE_CACHE: "⏳ stale cache",
    Tier.OFFLINE: "📴 offline answer",
    Tier.DECLINED: "🚫 declined",
    Tier.UNAVAILABLE: "⚠️ unavailable",
}


@dataclass(frozen=True)
class Origin:
    """Who asked, and in which conversation: kept with a question nobody could answer."""

    conversation_id: str = ""
    who: str = ""


@dataclass(frozen=True)
class Degraded:
    """A degraded tier's answer: what the caller reads and why it is not a normal one."""

    tier: Tier
    text: str
    complete: bool
    notice: str
    provider: str | None = None
    model: str | None = None
    finish_reason: str | None = None


def degraded_answer(question: str, reason: str, *, cache: AnswerCache, key: str | None, faq: Faq | None,
                    followups: FollowUps, now: float, origin: Origin | None = None,
                    answers: StaleAnswers | None = None) -> Degraded:
    """The best answer left when no provider could answer (`reason` says why). Keeps the question
    when nothing else answers it. A stale answer comes from the memory cache, else from the
    durable `answers` (kept across restarts; its age is judged from wall time)."""
    hit = cache.get(key) if key is not None else None
    stale = (hit[0], now - hit[0].stored_at) if hit is not None else None
    if stale is None and key is not None and answers is not None:
        stale = answers.stale(key)
    if stale is not None:
        answer, age = stale
        return Degraded(Tier.STALE_CACHE, answer.text, True,
                        f"No provider could answer just now; this is a saved answer from {_age(age)} ago.",
                        answer.provider, answer.model, "stop")
    match = faq.match(question) if faq is not None else None
    if match is not None:
        entry, score = match
        return Degraded(Tier.OFFLINE, entry.answer, True,
                        f"No provider could answer just now; this is an offline answer to “{entry.question}” "
                        f"({score:.0%} match).", finish_reason="stop")
    origin = origin or Origin()
    kept = followups.add(question, why=reason, conversation_id=origin.conversation_id, who=origin.who)
    return Degraded(Tier.UNAVAILABLE, unavailable_text(question, kept=kept), False,
                    f"No provider could answer ({reason}); " + (
                        "the question was kept for follow-up." if kept
                        else "the question could NOT be kept for follow-up (the store is failing)."))


def unavailable_text(question: str, *, kept: bool = True) -> str:
    q = question.strip()
    if not kept:  # nothing else holds it: quote it whole, so nothing typed is lost
        quoted = "\n".join(f"> {line}" for line in q.splitlines() or [""])
        return ("Sorry — we can't answer right now: all of our AI providers are unavailable, and we could not "
                "save your question for follow-up either. Please send it again in a moment; here it is, so "
                f"nothing you typed is lost:\n\n{quoted}")
    shown = q if len(q) <= 300 else q[:300] + "…"
    return ("Sorry — we can't answer right now: all of our AI providers are unavailable. We've kept your "
            f"question and will get back to you; you can also send it again in a moment.\n\n> {shown}")


def declined_text(provider: str, why: str) -> str:
    return (f"This request was declined by {provider}'s content policy ({why}). It was not sent to "
            "other providers. Try rephrasing the question.")


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
