"""Metrics history: every metrics event, written in batches off the request thread, so the
dashboard's history survives a restart (and, on PostgreSQL, is the whole fleet's)."""

from __future__ import annotations

import sqlalchemy as sa

from .sql import create, metadata, migration

events_table = sa.Table(
    "metrics_events", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),  # wall-clock seconds
    sa.Column("replica", sa.Text, nullable=False, default=""),
    sa.Column("kind", sa.String(16), nullable=False),  # attempt | request | probe | transition
    sa.Column("data", sa.Text, nullable=False),  # the event's fields as JSON
    sa.Index("ix_metrics_events_at", "at"),
)
migration(3)(create(events_table))
