"""The last tiers: answers from an editable FAQ when no provider can answer, and questions kept
for follow-up when nothing matches."""

from __future__ import annotations

import json
import math
import re
import threading
import tomllib
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from .files import NotAFile, read_regular_file

DEFAULT_FAQ = Path(__file__).parent / "data" / "offline_faq.toml"
MAX_FAQ_BYTES = 8 << 20

_STOP = set("""a an and are as at be but by can could do does for from how i if in into is it its me my of on or our
please should so that the their there these this to was we what when where which who why will with would you your""".split())
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def _terms(text: str) -> Counter:
    words = [w.lower() for w in _WORD.findall(text)]
    # Crude stemming: "passwords"/"password", "resetting"/"reset" should meet.
    return Counter(re.sub(r"(ing|ed|es|s)$", "", w) or w for w in words if w.lower() not in _STOP)


def similarity(a: str, b: str) -> float:
    """Cosine similarity of the two texts' content words, 0–1."""
    ta, tb = _terms(a), _terms(b)
    dot = sum(ta[t] * tb[t] for t in ta.keys() & tb.keys())
    norm = math.sqrt(sum(v * v for v in ta.values()) * sum(v * v for v in tb.values()))
    return dot / norm if norm else 0.0


@dataclass(frozen=True)
class FaqEntry:
    question: str
    answer: str
    alternates: tuple[str, ...] = ()


class Faq:
    def __init__(self, entries: list[FaqEntry], min_similarity: float = 0.5) -> None:
        self.entries = entries
        self.min_similarity = min_similarity

    @classmethod
    def load(cls, path: str | Path | None = None, min_similarity: float = 0.5) -> Faq:
        """Read `[[faq]] question/answer/alternates` entries. Raises ValueError naming the file."""
        if isinstance(min_similarity, bool) or not isinstance(min_similarity, (int, float)) or not (
                0.0 <= min_similarity <= 1.0):  # also false for NaN
            raise ValueError(f"min_similarity must be a number from 0 to 1, not {min_similarity!r}")
        path = Path(path) if path else DEFAULT_FAQ
        try:
            data = tomllib.loads(read_regular_file(path, MAX_FAQ_BYTES).decode("utf-8"))
        except OSError as e:
            raise ValueError(f"{path}: can't read the offline FAQ ({e.strerror or e})") from None
        except (NotAFile, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"{path}: can't read the offline FAQ ({e})") from None
        except RecursionError:
            raise ValueError(f"{path}: can't read the offline FAQ (nested too deeply)") from None
        items = data.get("faq", [])
        if not isinstance(items, list):
            raise ValueError(f"{path}: faq must be a list of tables, written as [[faq]]")
        entries = []
        for i, item in enumerate(items):
            q, a = (item.get("question"), item.get("answer")) if isinstance(item, dict) else (None, None)
            if not (isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip()):
                raise ValueError(f"{path}: faq[{i}] needs a non-empty question and answer")
            alternates = item.get("alternates", [])
            if not isinstance(alternates, list) or not all(isinstance(x, str) for x in alternates):
                raise ValueError(f"{path}: faq[{i}].alternates must be a list of strings")
            entries.append(FaqEntry(q.strip(), a.strip(), tuple(alternates)))
        return cls(entries, min_similarity)

    def match(self, question: str) -> tuple[FaqEntry, float] | None:
        best, score = None, 0.0
        for entry in self.entries:
            s = max(similarity(question, q) for q in (entry.question, *entry.alternates))
            if s > score:
                best, score = entry, s
        return (best, score) if best is not None and score >= self.min_similarity else None


class FollowUps:
    """Questions nobody could answer, kept so someone can get back to the user.

    In memory (bounded) and, when a file is configured, appended to it as JSON lines.
    """

    def __init__(self, path: str | None = None, max_kept: int = 1000) -> None:
        self.path = Path(path) if path else None
        self._kept: deque[dict] = deque(maxlen=max_kept)
        self._lock = threading.Lock()

    def add(self, at: float, question: str) -> None:
        item = {"at": at, "question": question}
        with self._lock:
            self._kept.append(item)
            if self.path is not None:
                try:
                    with self.path.open("a", encoding="utf-8") as f:
                        f.write(json.dumps(item, ensure_ascii=False) + "\n")
                except OSError:
                    pass  # the in-memory copy still holds it

    def items(self) -> list[dict]:
        with self._lock:
            return list(self._kept)
