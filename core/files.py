"""Reading a small file the user named (the config, the FAQ) without hanging or exhausting memory."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class NotAFile(ValueError):
    """The path names something other than a small regular file. The message says what."""


def read_regular_file(path: str | Path, limit: int) -> bytes:
    """The file's bytes. Raises OSError (missing, unreadable) or NotAFile (a FIFO, a device, a
    directory, or more than `limit` bytes)."""
    # Non-blocking, so opening a FIFO with no writer returns at once instead of hanging; the
    # type is checked on the open descriptor, so the file can't be swapped after the check.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotAFile("is a directory" if stat.S_ISDIR(mode) else "is not a regular file (a pipe or a device?)")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise NotAFile(f"is larger than {limit // 1024:,} KiB")
    return data
