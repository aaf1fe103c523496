"""Where the app keeps state, behind one small interface per kind of state.

Two deployments:
- **Embedded** (the default, zero setup): a SQLite file `understudy.db` in the data directory
  (`UNDERSTUDY_DATA_DIR`, else `[store] path`, else `data/` in the working directory) holds
  conversations, kept questions, metrics history and stale answers; breakers, the fresh answer
  cache and chaos stay in this process's memory.
- **Fleet**: `UNDERSTUDY_DATABASE_URL` (or `[store] database_url`, `postgresql://…`) puts the
  durable state in PostgreSQL, and `UNDERSTUDY_REDIS_URL` (or `[store] redis_url`) puts breakers,
  the answer cache, chaos, live metrics events and probe scheduling in Redis, shared by every
  replica. The environment wins over the file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import StoreError
from .followups import FollowUp, FollowUpStore, SqlFollowUpStore
from .sql import Database, shown_url

DATA_DIR_ENV = "UNDERSTUDY_DATA_DIR"
DATABASE_URL_ENV = "UNDERSTUDY_DATABASE_URL"
REDIS_URL_ENV = "UNDERSTUDY_REDIS_URL"
REPLICA_ENV = "UNDERSTUDY_REPLICA"
DEFAULT_DATA_DIR = "data"
SQLITE_FILE = "understudy.db"

__all__ = ["Database", "FollowUp", "FollowUpStore", "SqlFollowUpStore", "StoreError", "data_dir", "database_url",
           "redis_url", "replica_name", "shown_url"]


def data_dir(settings: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    settings = settings or {}
    return Path(env.get(DATA_DIR_ENV) or settings.get("path") or DEFAULT_DATA_DIR).expanduser()


def database_url(settings: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> str:
    """The SQLAlchemy URL of the store. `settings` is the config's `[store]` section. A plain
    `postgresql://` URL uses psycopg 3, the driver this app ships with."""
    env = os.environ if env is None else env
    settings = settings or {}
    url = (env.get(DATABASE_URL_ENV) or settings.get("database_url") or "").strip()
    if url:
        for plain in ("postgresql://", "postgres://"):
            if url.startswith(plain):
                return "postgresql+psycopg://" + url[len(plain):]
        return url
    return "sqlite:///" + str((data_dir(settings, env) / SQLITE_FILE).absolute())


def redis_url(settings: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The Redis URL that makes this process part of a fleet, or None (embedded)."""
    env = os.environ if env is None else env
    settings = settings or {}
    return (env.get(REDIS_URL_ENV) or settings.get("redis_url") or "").strip() or None


def replica_name(env: Mapping[str, str] | None = None) -> str:
    """This process's name in the fleet's metrics: `UNDERSTUDY_REPLICA`, else host and pid."""
    env = os.environ if env is None else env
    return (env.get(REPLICA_ENV) or "").strip()[:64] or f"{socket.gethostname()}-{os.getpid()}"
