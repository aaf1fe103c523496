"""Text from elsewhere (an imported file, a provider, a user) drawn inside Markdown we render.

Streamlit renders Markdown in the browser, and an image there is fetched at once: a crafted
import's `![](http://evil/x.png)` would be a tracking pixel, a fake link in a badge a phish. Two
ways to draw such text:

- `literal(text)`: a value inside our own Markdown (a badge, a timeline cell, a title) shows
  exactly its characters, on one line. Every ASCII punctuation character is backslash-escaped
  (CommonMark lets any be), so nothing can start in it: no link, image, emphasis, code, HTML,
  table cell, heading, list, math or Streamlit `:directive[…]`. GFM's bare links (`http://…`,
  `www.…`, `a@b.c`) are found after escapes are undone, so a word joiner (U+2060, zero width)
  goes before each `//`, `.` after `www` and `@`: what is seen is unchanged, and no link starts.
- `as_typed(text)`: a user's own message, as HTML that shows exactly what they typed: no Markdown
  at all, every line break and run of spaces kept, and the direction taken from the text itself
  (`dir="auto"`, and line by line: Arabic or Hebrew reads right to left, an English line beside it
  left to right). Everything is escaped, so no tag, image or link can start in it.
- `without_images(text)`: a message keeps its Markdown (lists, code, links) but no image can
  start in it: `![` becomes `!\\[`, which shows as `![`. Outside code that is invisible; inside
  code the backslash shows (e.g. Rust's `vec!\\[1]`). Telling code from text here would need the
  browser's exact parser, and a parser that disagreed with it would let an image through.
"""

from __future__ import annotations

import html
import re

_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # all of ASCII punctuation, backslash included
_BARE_LINK = re.compile(r"(?=//)|(?<=www)(?=\.)|(?=@)", re.IGNORECASE)  # where GFM would start a link
JOINER = "\u2060"
_BACKTICKS = re.compile(r"`+")


def as_typed(text: object) -> str:
    return (f'<div dir="auto" style="white-space: pre-wrap; overflow-wrap: anywhere; unicode-bidi: plaintext; text-align: start">'
            f'{html.escape(str(text), quote=True)}</div>')


def _one_line(text: object) -> str:
    # str.split() breaks on every Unicode line and paragraph separator too (U+2028, U+0085, …).
    return " ".join(str(text).split())


def literal(text: object) -> str:
    """`text` as inline Markdown that shows exactly its characters (whitespace runs, line breaks
    included, become one space), and no bare link."""
    return _PUNCTUATION.sub(r"\\\1", _BARE_LINK.sub(JOINER, _one_line(text)))


def code(text: object) -> str:
    """`text` as an inline code span on one line ("" for none). Nothing inside a code span is
    Markdown; its fence is one backtick longer than any run of backticks in the text. Even so a
    `![` is broken (a real name never has one), so no image is ever one miscounted fence away.
    Not for a table cell: a `|` in a code span still ends the cell there (use `literal`)."""
    line = without_images(_one_line(text))
    if not line:
        return ""
    fence = "`" * (1 + max((len(run) for run in _BACKTICKS.findall(line)), default=0))
    pad = " " if line.startswith("`") or line.endswith("`") else ""  # else they would join the fence
    return f"{fence}{pad}{line}{pad}{fence}"


def without_images(text: str) -> str:
    """A message's Markdown with every image neutralised (inline, reference and collapsed alike:
    all start with `![`); everything else renders as before."""
    return text.replace("![", "!\\[")
