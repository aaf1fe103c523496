"""Where the app keeps state that must outlive the process, behind one small interface per kind.

Where: `UNDERSTUDY_DATABASE_URL` or `[store] database_url` (e.g. `postgresql+psycopg://…`), else a
SQLite file `understudy.db` in the data directory: `UNDERSTUDY_DATA_DIR`, else `[store] path`,
else `data/` in the working directory. The environment wins over the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import StoreError
from .followups import FollowUp, FollowUpStore, SqlFollowUpStore, shown_url

DATA_DIR_ENV = "UNDERSTUDY_DATA_DIR"
DATABASE_URL_ENV = "UNDERSTUDY_DATABASE_URL"
DEFAULT_DATA_DIR = "data"
SQLITE_FILE = "understudy.db"

__all__ = ["FollowUp", "FollowUpStore", "SqlFollowUpStore", "StoreError", "database_url", "data_dir", "shown_url"]


def data_dir(settings: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    settings = settings or {}
    return Path(env.get(DATA_DIR_ENV) or settings.get("path") or DEFAULT_DATA_DIR).expanduser()


def database_url(settings: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> str:
    """The SQLAlchemy URL of the store. `settings` is the config's `[store]` section."""
    env = os.environ if env is None else env
    settings = settings or {}
    url = env.get(DATABASE_URL_ENV) or settings.get("database_url")
    if url:
        return url
    return "sqlite:///" + str((data_dir(settings, env) / SQLITE_FILE).absolute())
