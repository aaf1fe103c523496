"""core.markdown against hostile text: a value drawn with `literal` shows exactly its characters
and starts nothing; a message through `without_images` keeps its Markdown but no image."""

from __future__ import annotations

import re

import pytest

from core.markdown import JOINER, code, literal, without_images
from tests.conftest import as_text, unescaped_punctuation

HOSTILE = [
    "[click here](http://evil.example/phish)",
    "![](http://evil.example/x.png)",
    "![a][r]\n\n[r]: http://evil.example/x.png",
    "![r][] and ![r]\n[r]: <http://evil.example/x.png>",
    "<img src=http://evil.example/x.png> <a href='http://evil.example'>x</a>",
    "<http://evil.example/autolink> www.evil.example ada@evil.example https://evil.example",
    "HTTPS://EVIL.EXAMPLE WWW.EVIL.EXAMPLE mailto:ada@evil.example xmpp:ada@evil.example",
    "`code` ``a`b`` ```fence```",
    "cell | another | cell\n|---|---|\n| x | y |",
    "line one\nline two\r\nline three\rfour\u2028five\u2029six\x85seven\x0bend",
    "# heading\n- item\n1. item\n> quote\n    indented code\n===",
    "**bold** _em_ ~~gone~~ $x^2$ $$\\int$$ :red[alarm] :material/warning: :smile:",
    "back\\slash \\[not escaped] \\\\[still a link](http://evil.example)",
    "Zürich 東京 🙂 e\u0301 \u202eevil\u202c",
    "&lt;script&gt; &#33;[x](http://evil.example/x.png) &amp;",
    "",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_literal_starts_nothing_and_reads_as_the_text_on_one_line(text):
    md = literal(text)
    assert unescaped_punctuation(md) == []
    assert not re.search(r"[\n\r\x0b\x0c\x85\u2028\u2029]", md)
    assert as_text(md) == " ".join(text.split())  # its characters, whitespace runs made one space
    # GFM finds bare links in the text once escapes are undone (remark-gfm's own patterns):
    unescaped = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", md)
    assert not re.search(r"https?://|www\.|[-.\w+]@[-\w]", unescaped, re.IGNORECASE)


def test_a_literal_keeps_what_is_not_punctuation():
    assert literal("Zürich 東京 🙂") == "Zürich 東京 🙂"
    assert literal("openai-1") == "openai\\-1"
    assert literal("![a](http://x)") == f"\\!\\[a\\]\\(http\\:{JOINER}\\/\\/x\\)"
    assert literal(None) == "None" and literal(42) == "42"


@pytest.mark.parametrize("text, span", [
    ("claude-test", "`claude-test`"),
    ("a`b", "``a`b``"),
    ("``x", "``` ``x ```"),
    ("x`", "`` x` ``"),
    ("[a](http://evil.example)", "`[a](http://evil.example)`"),
    ("![a](http://evil.example/x.png)", "`!\\[a](http://evil.example/x.png)`"),
    ("two\nlines", "`two lines`"),
    ("", ""),
    ("  \n ", ""),
])
def test_a_code_span_is_one_line_and_cannot_be_closed_from_inside(text, span):
    assert code(text) == span


@pytest.mark.parametrize("text", HOSTILE + ["!![x](u)", "![![x](u)](v)", "[![badge](http://i)](http://l)",
                                            "| ![x](http://evil.example/x.png) |", "- ![x](u)\n  ![y](v)",
                                            "![", "!" * 5 + "[" * 5, "\\![x](u)", "!\\[x](u)"])
def test_no_image_can_start_in_a_message(text):
    # An image is `!` directly followed by `[` in the source (an entity or an escape can't make one).
    out = without_images(text)
    assert "![" not in out
    assert out.replace("!\\[", "![") == text.replace("!\\[", "![")  # only those two characters changed


def test_a_messages_other_markdown_is_untouched():
    text = ("# Title\n\n**bold**, _em_, [a link](https://example.com), `code`, <https://example.com>\n\n"
            "- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint('hi!')\n```\n\nWow! [Really]?")
    assert without_images(text) == text


def test_a_users_text_is_drawn_as_typed_and_nothing_in_it_is_markup():
    from core.markdown import as_typed
    text = 'a <script>x()</script> & "q" \'s\'\n  two  spaces\n![i](http://evil/p.png) *not italic* مرحبا'
    drawn = as_typed(text)
    assert drawn.startswith('<div dir="auto"') and "white-space: pre-wrap" in drawn and drawn.endswith("</div>")
    inner = drawn[drawn.index(">") + 1:-len("</div>")]
    assert "<" not in inner and ">" not in inner and '"' not in inner  # no tag or attribute can start
    import html
    assert html.unescape(inner) == text  # every character, line break and run of spaces kept
