"""Conversations: every chat, kept so a reload, a restart or a bookmark brings it back exactly.

One row per conversation, its messages (with their badges and timelines) as one JSON document,
so a save is one atomic write. The id is the capability: 128 random bits, carried in the URL.

Saves are versioned, never timed: a snapshot carries the stored version it was built on and the
writer (one browser session) that built it. It replaces the stored copy when it builds on that copy,
or when the stored copy is this writer's own earlier snapshot. Anything else means another tab or
replica wrote in between: the save says CONFLICT and writes nothing, so no turn is lost, and the
caller keeps the snapshot as a new conversation. Clocks never decide (replicas' clocks differ).
A delete leaves a tombstone (the id, its owner, when; no content), so a snapshot still on its way
from another tab can never bring a deleted conversation back: its save says DELETED.

Ownership: every conversation has an owner ("user:<email or sub>" with login, else
"browser:<hash of the browser's cookie token>"). Only the owner's list shows it, and only the owner
can save over, rename or delete it; anyone holding the id can *read* it (the page shows it and
continues it as the reader's own copy).

`ConversationStore` is the interface (the contract tests run it against SQLite and PostgreSQL);
`SqlConversationStore` is the one backend, on the app's `Database`.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..messages import clean_text
from .followups import followups_table
from .sql import Database, add_columns, create, metadata, migration

conversations_table = sa.Table(
    "conversations", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),  # "user:<email or sub>" with login, else "browser:<token>"
    sa.Column("title", sa.Text, nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("settings", sa.Text, nullable=False, default="{}"),  # JSON: system prompt, temperature, max tokens
    sa.Column("messages", sa.Text, nullable=False, default="[]"),  # JSON list of {role, content, meta, at}
    sa.Column("message_count", sa.Integer, nullable=False, default=0),
    # Added by migration 5: how many times it was saved, by which writer last, when it was deleted.
    sa.Column("version", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("writer", sa.Text, nullable=False, server_default=""),
    sa.Column("deleted_at", sa.Float, nullable=True),
    sa.Index("ix_conversations_owner_updated", "owner", "updated_at"),
)
migration(2)(create(conversations_table))
migration(5)(add_columns(conversations_table, "version", "writer", "deleted_at"))

_ID = re.compile(r"[0-9a-f]{32}")
TITLE_CHARS = 80


class BadConversationId(ValueError):
    """A conversation id that is not one of ours (a mistyped or truncated link). The message is for people."""


def new_id() -> str:
    """128 random bits as 32 hex characters: unguessable, so the id can be the capability."""
    return secrets.token_hex(16)


def parse_id(raw: object) -> str:
    """The id in a link, checked strictly; BadConversationId says what is wrong (never echoing much of it)."""
    if not isinstance(raw, str) or not _ID.fullmatch(raw):
        raise BadConversationId("That link's conversation id is not valid: it should be 32 characters, "
                                "0-9 and a-f. Check the link, or start a new chat.")
    return raw


def label_for(id: str) -> str:
    """A conversation's name for people who must not be able to open it (the Follow-ups page, a
    support desk): "c-" and 8 hex of the id's SHA-256. The id is 128 random bits, so the label can't
    be turned back into it; "" for no conversation. 32 bits: enough to match a user's quote to a
    kept question, not a unique key (ids are)."""
    return "c-" + hashlib.sha256(id.encode()).hexdigest()[:8] if id else ""


def title_for(messages: list[dict]) -> str:
    """The first question, on one line, at most TITLE_CHARS characters (its files' names when it
    was only files)."""
    first = next((m for m in messages if m.get("role") == "user"), {})
    line = " ".join(str(first.get("content", "")).split()) or ", ".join(
        "📎 " + str(a.get("name")) for a in first.get("attachments") or [] if isinstance(a, dict))
    line = " ".join(line.split())
    return line if len(line) <= TITLE_CHARS else line[:TITLE_CHARS - 1].rstrip() + "…"


@dataclass(frozen=True)
class Conversation:
    id: str
    owner: str
    created_at: float
    updated_at: float
    messages: list[dict] = field(default_factory=list)  # {role, content, meta?, at?}
    settings: dict = field(default_factory=dict)  # system, temperature, max_tokens
    title: str = ""  # "" means: from the first question
    version: int = 0  # the stored version this copy is (as loaded) or builds on (a snapshot); 0: new
    writer: str = ""  # the browser session that made this snapshot (a random token per session)

    @property
    def shown_title(self) -> str:
        return self.title or title_for(self.messages) or "New chat"

    def with_(self, **changes: Any) -> Conversation:
        return replace(self, **changes)


@dataclass(frozen=True)
class Summary:
    """One line of a conversation list (no messages)."""

    id: str
    title: str
    created_at: float
    updated_at: float
    message_count: int


class Saved(enum.Enum):
    """What a save did. Only SAVED wrote anything."""

    SAVED = "saved"
    CONFLICT = "conflict"  # another writer saved since this snapshot's version: keep it as a new conversation
    DELETED = "deleted"  # the conversation was deleted: it stays deleted
    NOT_YOURS = "not yours"  # the id belongs to another owner


class ConversationStore(Protocol):
    """Every method either does what it says, durably, or raises StoreError."""

    def save(self, conversation: Conversation) -> Saved:
        """Write the whole conversation in one transaction when it builds on the stored copy (its
        `version`), or the stored copy is its writer's own; see `Saved` for when it doesn't. A title
        set by `rename` is kept; otherwise the title follows the first question."""

    def load(self, id: str) -> Conversation | None: ...

    def list(self, owner: str, *, search: str = "", limit: int = 50) -> list[Summary]:
        """The owner's conversations, most recently updated first. `search`: a case-insensitive
        literal substring of the title or of any message."""

    def rename(self, id: str, *, owner: str, title: str) -> bool: ...

    def delete(self, id: str, *, owner: str) -> bool:
        """Delete for good: the content goes, and the questions kept from it for follow-up; a
        tombstone stays so later saves can't undo it."""

    def close(self) -> None: ...


class SqlConversationStore:
    """Conversations in the database (a `Database`, or a URL to open one). Thread-safe, and safe
    for several processes on one database (each save is one transaction on a locked row)."""

    def __init__(self, db: Database | str, *, clock: Callable[[], float] = time.time) -> None:
        self._owned = not isinstance(db, Database)
        self.db = Database(db) if self._owned else db
        self.where = self.db.where
        self._clock = clock  # wall time, for tombstones

    def migrate(self) -> None:
        self.db.migrate()

    def save(self, conversation: Conversation) -> Saved:
        c, t = conversation, conversations_table
        content = dict(title=clean_text(c.title or title_for(c.messages)), updated_at=c.updated_at,
                       settings=_dumps(c.settings), messages=_dumps(c.messages), message_count=len(c.messages),
                       writer=c.writer)
        key = parse_id(c.id)
        # Row-locked (PostgreSQL: FOR UPDATE; SQLite: the transaction holds the write lock), so the
        # check and the write are one step for every process on this database.
        stored = (sa.select(t.c.owner, t.c.title, t.c.version, t.c.writer, t.c.deleted_at)
                  .where(t.c.id == key).with_for_update())
        with self._errors("save a conversation in"), self.db.begin() as conn:
            row = conn.execute(stored).first()
            if row is None:
                insert = (sqlite.insert if self.db.is_sqlite else postgresql.insert)(t)
                added = conn.execute(insert.values(id=key, owner=c.owner, created_at=c.created_at, version=1,
                                                   **content).on_conflict_do_nothing().returning(t.c.id)).first()
                if added is not None:
                    return Saved.SAVED
                # Inserted by someone else a moment ago: that copy is not this snapshot's base.
                row = conn.execute(stored).first()
            if row.deleted_at is not None:
                return Saved.DELETED
            if row.owner != c.owner:
                return Saved.NOT_YOURS
            if row.version != c.version and not (c.writer and row.writer == c.writer):
                return Saved.CONFLICT
            if row.title:  # a renamed (or already titled) conversation keeps its title
                content.pop("title")
            conn.execute(t.update().where(t.c.id == key).values(version=row.version + 1, **content))
            return Saved.SAVED

    def load(self, id: str) -> Conversation | None:
        t = conversations_table
        with self._errors("read"), self.db.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == id, t.c.deleted_at.is_(None))).first()
        if row is None:
            return None
        return Conversation(id=row.id, owner=row.owner, title=row.title, created_at=row.created_at,
                            updated_at=row.updated_at, messages=json.loads(row.messages),
                            settings=json.loads(row.settings), version=row.version, writer=row.writer)

    def list(self, owner: str, *, search: str = "", limit: int = 50) -> list[Summary]:
        t = conversations_table
        needle = " ".join(search.split())
        cols = [t.c.id, t.c.title, t.c.created_at, t.c.updated_at, t.c.message_count]
        live = sa.and_(t.c.owner == owner, t.c.deleted_at.is_(None))
        q = sa.select(*cols).where(live).order_by(t.c.updated_at.desc(), t.c.id)
        if not needle:
            with self._errors("read"), self.db.connect() as conn:
                return [Summary(*row) for row in conn.execute(q.limit(limit))]
        # The database narrows by substring of the title or of the stored JSON (where the text
        # appears JSON-escaped); each candidate is then checked against the message texts
        # themselves, so a search for "content" does not match every conversation's JSON keys.
        escaped = json.dumps(needle, ensure_ascii=False)[1:-1]
        q = sa.select(*cols, t.c.messages).where(
            live,
            sa.or_(t.c.title.icontains(needle, autoescape=True), t.c.messages.icontains(escaped, autoescape=True)),
        ).order_by(t.c.updated_at.desc(), t.c.id)
        found: list[Summary] = []
        folded = needle.casefold()
        with self._errors("read"), self.db.connect() as conn:
            for row in conn.execute(q):
                stored = json.loads(row.messages)
                texts = [row.title] + [str(m.get("content", "")) for m in stored] + [
                    str(a.get("name", "")) for m in stored for a in m.get("attachments") or [] if isinstance(a, dict)]
                if any(folded in " ".join(text.split()).casefold() for text in texts):
                    found.append(Summary(*row[:5]))
                    if len(found) >= limit:
                        break
        return found

    def rename(self, id: str, *, owner: str, title: str) -> bool:
        t = conversations_table
        title = clean_text(" ".join(title.split()))[:200]
        if not title:
            return False
        with self._errors("rename a conversation in"), self.db.begin() as conn:
            return conn.execute(t.update().where(t.c.id == id, t.c.owner == owner, t.c.deleted_at.is_(None))
                                .values(title=title).returning(t.c.id)).first() is not None

    def delete(self, id: str, *, owner: str) -> bool:
        t = conversations_table
        gone = dict(deleted_at=self._clock(), title="", settings="{}", messages="[]", message_count=0,
                    version=t.c.version + 1)
        with self._errors("delete a conversation from"), self.db.begin() as conn:
            done = conn.execute(t.update().where(t.c.id == id, t.c.owner == owner, t.c.deleted_at.is_(None))
                                .values(**gone).returning(t.c.id)).first() is not None
            if done:
                conn.execute(followups_table.delete().where(followups_table.c.conversation_id == id))
            return done

    def import_json(self, data: bytes, *, owner: str, now: float) -> Conversation:
        """A JSON export, checked whole (BadImport says why it can't be read), saved under a new id for `owner`."""
        from ..transcript import conversation_from_export  # the file format lives with the export

        conversation = conversation_from_export(data, owner=owner, now=now)
        self.save(conversation)
        return conversation

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def _errors(self, doing: str):
        return self.db.errors(doing, "the conversation store")


def _dumps(value: Any) -> str:
    # ensure_ascii off: the stored text is searchable as written; allow_nan off: NaN is not JSON.
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no database takes it raw, JSON-escaped it is fine
        text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    return text
