"""The last tiers: answers from an editable FAQ when no provider can answer, and questions kept
for follow-up when nothing matches."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import stat
import threading
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .files import NotAFile, read_regular_file
from .store import Database, FollowUp, FollowUpStore, SqlFollowUpStore, StoreError

log = logging.getLogger("understudy")

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
    return _cosine(_terms(a), _terms(b))


def _cosine(ta: Counter, tb: Counter) -> float:
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
        asked = _terms(question)  # once: a pasted log is 5,000 lines, and the FAQ has dozens of questions
        for entry in self.entries:
            s = max(_cosine(asked, _terms(q)) for q in (entry.question, *entry.alternates))
            if s > score:
                best, score = entry, s
        return (best, score) if best is not None and score >= self.min_similarity else None


class FollowUps:
    """Questions nobody could answer, kept so someone can get back to the user.

    Kept in the durable store (core/store) and, when `[offline] followup_file` is set, also
    appended to that file as JSON lines. `add` says whether the question was really kept; every
    failure is logged (never the question: it is user content) and shows in `health()`.
    """

    def __init__(self, db: Database | str, *, file: str | None = None, wall: Callable[[], float] = time.time) -> None:
        self.file = Path(file) if file else None
        self.wall = wall
        self._lock = threading.Lock()
        self._failing: set[str] = set()  # "store", "file": which sinks failed at their last use
        self.store: FollowUpStore = SqlFollowUpStore(db)
        self._health = {"status": "ok", "store": self.store.where, "failed": 0, "last_error": None,
                        "last_error_at": None}
        try:
            self.store.migrate()  # the schema is made or updated on start, not at the first lost question
        except StoreError as e:
            self._failed("store", e)

    def add(self, question: str, *, why: str = "", conversation_id: str = "", who: str = "") -> bool:
        """Keep the question; True only if at least one durable copy was written."""
        at = self.wall()
        errors: list[tuple[str, StoreError]] = []
        item_id, in_file = None, False
        try:
            item_id = self.store.add(question, asked_at=at, why=why, conversation_id=conversation_id, who=who)
        except StoreError as e:
            errors.append(("store", e))
        if self.file is not None:
            item = {"id": item_id, "asked_at": at, "question": question, "why": why,
                    "conversation_id": conversation_id, "who": who}
            try:
                with self._lock:
                    _append_line(self.file, json.dumps(item, ensure_ascii=False) + "\n")
                in_file = True
            except OSError as e:
                errors.append(("file", StoreError(f"can't append to {self.file} ({e.strerror or e})")))
        kept = item_id is not None or in_file
        if item_id is not None:
            self._ok("store")
        if in_file:
            self._ok("file")
        for sink, e in errors:
            self._failed(sink, e)
        if not kept:
            log.error("a question could not be kept for follow-up")
            with self._lock:
                self._health["failed"] += 1
        return kept

    def list(self, *, answered: bool | None = None, search: str = "", limit: int | None = None) -> list[FollowUp]:
        """Newest first. Raises StoreError (also recorded in health)."""
        return self._call(lambda s: s.list(answered=answered, search=search, limit=limit))

    def mark_answered(self, id: int) -> bool:
        return self._call(lambda s: s.mark_answered(id, at=self.wall()))

    def health(self) -> dict:
        """{"status": "ok" | "failing", "store": where (no password), "failed": questions lost,
        "last_error": one line or None, "last_error_at": unix time or None}."""
        with self._lock:
            return dict(self._health)

    def close(self) -> None:
        self.store.close()

    def _call(self, op):
        try:
            out = op(self.store)
        except StoreError as e:
            self._failed("store", e)
            raise
        self._ok("store")
        return out

    def _ok(self, sink: str) -> None:
        with self._lock:
            self._failing.discard(sink)
            self._health["status"] = "failing" if self._failing else "ok"

    def _failed(self, sink: str, e: StoreError) -> None:
        log.error("follow-up store failing: %s", e)
        with self._lock:
            self._failing.add(sink)
            self._health.update(status="failing", last_error=str(e), last_error_at=self.wall())


def _append_line(path: Path, line: str) -> None:
    """Append one whole line and flush it to disk, or leave the file as it was (no half line on a
    full disk)."""
    data = line.encode("utf-8")
    # Non-blocking, so a FIFO (or a device) named by mistake fails at once instead of hanging every
    # unanswered question behind this one; only a regular file is written.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o600)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        size = os.fstat(fd).st_size
        try:
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
            os.fsync(fd)
        except OSError:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
