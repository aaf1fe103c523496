"""Text files attached to a message: read once, checked, kept with the message, sent as part of it.

A support agent attaches a log instead of pasting it. What the provider gets is the message's
text followed by each file's text, fenced, under its name; the whole must fit the same limit as a
typed message (`MAX_INPUT_CHARS`), so attaching is never a way round it. The stored message keeps
what the user typed (`content`) and its files (`attachments`) apart, so the page can show both
and an export can say which text came from which file.

A file is someone's upload: anything that is not text (a NUL byte, a picture, a PDF), not UTF-8
(or UTF-16 with its byte-order mark, as Windows tools write logs), empty, or too big is refused
with a sentence naming the file and saying why, never an exception.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .messages import MAX_INPUT_CHARS, clean_text

# A UTF-8 file of MAX_INPUT_CHARS characters is at most 4 bytes a character: anything bigger can't
# fit, so it is refused before it is decoded. (UTF-16 is at most 4 bytes a character too.)
MAX_FILE_BYTES = 4 * MAX_INPUT_CHARS
MAX_FILES = 10
MAX_NAME_CHARS = 200

# What a few common non-text files start with: named in the refusal, so it says what it saw.
_SIGNATURES = (
    (b"%PDF", "a PDF"), (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"PK\x03\x04", "a ZIP archive (or an Office document)"), (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "a program"), (b"MZ", "a Windows program"), (b"RIFF", "a media file"),
    (b"\xd0\xcf\x11\xe0", "an old Office document"), (b"SQLite format 3\x00", "an SQLite database"),
)
# Control characters a text file doesn't hold (tab, line feed, form feed, carriage return and
# escape, for coloured logs, are fine).
_CONTROL = re.compile("[\x01-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")
_BACKTICKS = re.compile(r"`+")


class BadAttachment(ValueError):
    """A file that can't be attached; the message names it and says why, for people."""


@dataclass(frozen=True)
class Attachment:
    name: str
    size: int  # bytes, as uploaded
    text: str

    @property
    def lines(self) -> int:
        return self.text.count("\n") + (0 if self.text.endswith("\n") else 1)

    def as_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "text": self.text}


# Embeddings, overrides and isolates: a name's characters show in the order they are written.
_BIDI_CONTROLS = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C])


def clean_name(name: object) -> str:
    """A file name to show and store: its last path part, on one line, at most MAX_NAME_CHARS."""
    text = clean_text(str(name or "")).replace("\\", "/").rsplit("/", 1)[-1]
    text = text.translate(_BIDI_CONTROLS)  # "evil\u202etxt.exe" would show as "evilexe.txt"
    text = " ".join(text.split())
    return text[:MAX_NAME_CHARS] or "file"


def human_size(size: int) -> str:
    """1,234 bytes → "1.2 KB" (decimal units, as file managers show them)."""
    if size < 1000:
        return f"{size:,} byte{'s' if size != 1 else ''}"
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            return f"{size:.1f} {unit}"
    raise AssertionError("unreachable")


def read(name: str, data: bytes) -> Attachment:
    """The file's text, or BadAttachment saying why it can't be attached."""
    name = clean_name(name)
    if not data:
        raise BadAttachment(f"“{name}” is empty.")
    if len(data) > MAX_FILE_BYTES:
        raise BadAttachment(f"“{name}” is {human_size(len(data))}; a message can hold at most "
                            f"{MAX_INPUT_CHARS:,} characters, so attach a smaller part of it.")
    text = _decode(name, data)
    if _CONTROL.search(text[:100_000]) or "\x00" in text:
        raise BadAttachment(f"“{name}” is not a text file (it holds control characters): only text files can be "
                            "attached.")
    text = clean_text(text).replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise BadAttachment(f"“{name}” holds only blank space.")
    if len(text) > MAX_INPUT_CHARS:
        raise BadAttachment(f"“{name}” is {len(text):,} characters; a message can hold at most {MAX_INPUT_CHARS:,}, "
                            "so attach a smaller part of it.")
    return Attachment(name=name, size=len(data), text=text)


def _decode(name: str, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise BadAttachment(f"“{name}” starts like UTF-16 text but is not valid UTF-16.") from None
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            raise BadAttachment(f"“{name}” looks like {what}, not text: only text files can be attached.")
    if b"\x00" in data[:8192]:
        raise BadAttachment(f"“{name}” is not a text file (it holds NUL bytes): only text files can be attached.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadAttachment(f"“{name}” is not UTF-8 text (byte {e.start:,} is not valid). Save it as UTF-8 and "
                            "attach it again.") from None


def compose(text: str, attachments: Iterable[Mapping]) -> str:
    """What a provider is sent for a message: the typed text, then each file's text fenced under its
    name (the fence longer than any run of backticks in the file, so a file can't end it early)."""
    parts = [text] if text.strip() else []
    parts += [f"Attached file “{a['name']}”:\n{fenced(a['text'])}" for a in attachments]
    return "\n\n".join(parts)


def fenced(text: str) -> str:
    """`text` as a Markdown code block whose fence is longer than any run of backticks in it."""
    fence = "`" * max(3, 1 + max((len(run) for run in _BACKTICKS.findall(text)), default=0))
    body = text[:-1] if text.endswith("\n") else text  # the fence's own line break ends the last line
    return f"{fence}\n{body}\n{fence}"


def too_long(text: str, attachments: Sequence[Mapping]) -> str | None:
    """Why the message with these files is over the limit, for people; None when it fits."""
    total = len(compose(text, attachments))
    if total <= MAX_INPUT_CHARS:
        return None
    if not attachments:
        return f"That message is {total:,} characters; the limit is {MAX_INPUT_CHARS:,}."
    names = ", ".join(f"“{a['name']}” ({len(a['text']):,})" for a in attachments)
    return (f"Your message and its files come to {total:,} characters ({names}); a message can hold at most "
            f"{MAX_INPUT_CHARS:,}. Attach a smaller part, or fewer files.")


def stored(raw: object) -> list[dict]:
    """A message's `attachments` as read back from a store or an imported file: only well-formed
    entries, each field of its type; anything else is dropped rather than break the page."""
    out = []
    for a in raw if isinstance(raw, list) else []:
        if not isinstance(a, dict) or not isinstance(a.get("text"), str):
            continue
        size = a.get("size")
        real = len(a["text"].encode())
        # Believed only when it could be this text's file's size (UTF-16 at most doubles it, plus a
        # mark); anything else, e.g. a hand-edited 10**400, is recomputed rather than drawn.
        size = size if isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= 2 * real + 4 else real
        out.append({"name": clean_name(a.get("name")), "size": size, "text": clean_text(a["text"])})
    return out[:MAX_FILES]
