"""The one error every store raises."""

from __future__ import annotations


class StoreError(Exception):
    """A store could not do what was asked. The message says what and why, in one line; it never
    contains the data (questions are user content) or a password."""


def describe(e: BaseException) -> str:
    """One short line for a database or file-system error, without SQLAlchemy's SQL and links."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text[:200]
