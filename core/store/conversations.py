"""Conversations: every chat, kept so a reload, a restart or a bookmark brings it back exactly.

One row per conversation, its messages (with their badges and timelines) as one JSON document,
so a save is one atomic upsert. The id is the capability: 128 random bits, carried in the URL.

Ownership: every conversation has an owner ("user:<email or sub>" with login, else
"browser:<hash of the browser's cookie token>"). Only the owner's list shows it, and only the owner
can save over, rename or delete it; anyone holding the id can *read* it (the page shows it and
continues it as the reader's own copy).

`ConversationStore` is the interface (the contract tests run it against SQLite and PostgreSQL);
`SqlConversationStore` is the one backend, on the app's `Database`.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..messages import clean_text
from .sql import Database, create, metadata, migration

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
    sa.Index("ix_conversations_owner_updated", "owner", "updated_at"),
)
migration(2)(create(conversations_table))

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
    """The first question, on one line, at most TITLE_CHARS characters."""
    first = next((m.get("content", "") for m in messages if m.get("role") == "user"), "")
    line = " ".join(str(first).split())
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


class ConversationStore(Protocol):
    """Every method either does what it says, durably, or raises StoreError."""

    def save(self, conversation: Conversation) -> bool:
        """Insert or replace the whole conversation in one statement. False (and nothing written)
        when the id belongs to another owner, or the stored copy is newer (`updated_at`). A title
        set by `rename` is kept; otherwise the title follows the first question."""

    def load(self, id: str) -> Conversation | None: ...

    def list(self, owner: str, *, search: str = "", limit: int = 50) -> list[Summary]:
        """The owner's conversations, most recently updated first. `search`: a case-insensitive
        literal substring of the title or of any message."""

    def rename(self, id: str, *, owner: str, title: str) -> bool: ...

    def delete(self, id: str, *, owner: str) -> bool: ...

    def close(self) -> None: ...


class SqlConversationStore:
    """Conversations in the database (a `Database`, or a URL to open one). Thread-safe."""

    def __init__(self, db: Database | str) -> None:
        self._owned = not isinstance(db, Database)
        self.db = Database(db) if self._owned else db
        self.where = self.db.where

    def migrate(self) -> None:
        self.db.migrate()

    def save(self, conversation: Conversation) -> bool:
        c, t = conversation, conversations_table
        values = dict(id=parse_id(c.id), owner=c.owner, title=clean_text(c.title or title_for(c.messages)),
                      created_at=c.created_at, updated_at=c.updated_at,
                      settings=_dumps(c.settings), messages=_dumps(c.messages), message_count=len(c.messages))
        insert = (sqlite.insert if self.db.is_sqlite else postgresql.insert)(t).values(**values)
        new = insert.excluded
        # A renamed title stays; an untitled row (imported empty) takes the first question.
        title = sa.case((t.c.title == "", new.title), else_=t.c.title)
        upsert = insert.on_conflict_do_update(
            index_elements=[t.c.id],
            set_={"title": title, "updated_at": new.updated_at, "settings": new.settings,
                  "messages": new.messages, "message_count": new.message_count},
            # Never over someone else's conversation, never an older snapshot over a newer one.
            where=sa.and_(t.c.owner == new.owner, t.c.updated_at <= new.updated_at),
        ).returning(t.c.id)
        with self._errors("save a conversation in"), self.db.begin() as conn:
            return conn.execute(upsert).first() is not None

    def load(self, id: str) -> Conversation | None:
        t = conversations_table
        with self._errors("read"), self.db.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.id == id)).first()
        if row is None:
            return None
        return Conversation(id=row.id, owner=row.owner, title=row.title, created_at=row.created_at,
                            updated_at=row.updated_at, messages=json.loads(row.messages),
                            settings=json.loads(row.settings))

    def list(self, owner: str, *, search: str = "", limit: int = 50) -> list[Summary]:
        t = conversations_table
        needle = " ".join(search.split())
        cols = [t.c.id, t.c.title, t.c.created_at, t.c.updated_at, t.c.message_count]
        q = sa.select(*cols).where(t.c.owner == owner).order_by(t.c.updated_at.desc(), t.c.id)
        if not needle:
            with self._errors("read"), self.db.connect() as conn:
                return [Summary(*row) for row in conn.execute(q.limit(limit))]
        # The database narrows by substring of the title or of the stored JSON (where the text
        # appears JSON-escaped); each candidate is then checked against the message texts
        # themselves, so a search for "content" does not match every conversation's JSON keys.
        escaped = json.dumps(needle, ensure_ascii=False)[1:-1]
        q = sa.select(*cols, t.c.messages).where(
            t.c.owner == owner,
            sa.or_(t.c.title.icontains(needle, autoescape=True), t.c.messages.icontains(escaped, autoescape=True)),
        ).order_by(t.c.updated_at.desc(), t.c.id)
        found: list[Summary] = []
        folded = needle.casefold()
        with self._errors("read"), self.db.connect() as conn:
            for row in conn.execute(q):
                texts = [row.title] + [str(m.get("content", "")) for m in json.loads(row.messages)]
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
            return conn.execute(t.update().where(t.c.id == id, t.c.owner == owner).values(title=title)
                                .returning(t.c.id)).first() is not None

    def delete(self, id: str, *, owner: str) -> bool:
        t = conversations_table
        with self._errors("delete a conversation from"), self.db.begin() as conn:
            return conn.execute(t.delete().where(t.c.id == id, t.c.owner == owner)
                                .returning(t.c.id)).first() is not None

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
