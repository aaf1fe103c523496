"""Conversations: every chat, kept so a reload, a restart or a bookmark brings it back exactly.

One row per conversation, its messages (with their badges and timelines) as one JSON document,
so a save is one atomic upsert. The id is the capability: 128 random bits, carried in the URL.
"""

from __future__ import annotations

import sqlalchemy as sa

from .sql import create, metadata, migration

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
