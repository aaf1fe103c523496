"""Stale answers kept on disk, so stale-if-error still has something to stand in with after a
restart. Only complete answers are written, keyed like the cache (core/cache.py `cache_key`)."""

from __future__ import annotations

import sqlalchemy as sa

from .sql import create, metadata, migration

answers_table = sa.Table(
    "answers", metadata,
    sa.Column("key", sa.String(64), primary_key=True),  # sha256 hex of the request
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("usage", sa.Text, nullable=True),  # JSON {input_tokens, output_tokens} or null
    sa.Column("stored_at", sa.Float, nullable=False),  # wall-clock seconds
    sa.Index("ix_answers_stored_at", "stored_at"),
)
migration(4)(create(answers_table))
