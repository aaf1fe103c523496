"""The one error every store raises."""

from __future__ import annotations

import sqlalchemy as sa


class StoreError(Exception):
    """A store could not do what was asked. The message says what and why, in one line; it never
    contains the data (questions are user content) or a password."""


def describe(e: BaseException) -> str:
    """One short line for a database or file-system error, without SQLAlchemy's SQL and links."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text[:200]


def refused_data(e: BaseException) -> bool:
    """The database (or its driver) refused these values, not the connection: trying the same
    values again can never succeed (a constraint, a value the column can't hold, text the driver
    can't encode). Anything else, a StoreError with no such cause included, may pass on a retry."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (sa.exc.IntegrityError, sa.exc.DataError, ValueError, TypeError)):
            return True
        e = getattr(e, "orig", None) or e.__cause__
    return False
