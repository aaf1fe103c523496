"""Attached text files: what is accepted, what is refused and how it says so, what a provider is sent."""

from __future__ import annotations

import codecs

import pytest

from core import attachments as files
from core.messages import MAX_INPUT_CHARS


def test_a_text_file_is_read_as_it_is():
    a = files.read("logs/server.log", "2026-12-04 ERROR *exactly*\r\nnext line\n".encode())
    assert (a.name, a.size, a.text, a.lines) == ("server.log", 38, "2026-12-04 ERROR *exactly*\nnext line\n", 2)


@pytest.mark.parametrize("data, text", [
    (codecs.BOM_UTF8 + "héllo".encode(), "héllo"),
    (codecs.BOM_UTF16_LE + "Windows log ✓".encode("utf-16-le"), "Windows log ✓"),
    (codecs.BOM_UTF16_BE + "big endian".encode("utf-16-be"), "big endian"),
    ("مرحبا\u200f שלום 👩‍💻 e\u0301 \x1b[31mred\x1b[0m\ttab".encode(), "مرحبا\u200f שלום 👩‍💻 e\u0301 \x1b[31mred\x1b[0m\ttab"),
])
def test_byte_order_marks_and_odd_unicode_are_kept_as_text(data, text):
    assert files.read("a.txt", data).text == text


@pytest.mark.parametrize("name, data, says", [
    ("empty.txt", b"", "“empty.txt” is empty."),
    ("blank.txt", b" \n\t\n", "“blank.txt” holds only blank space."),
    ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(100), "“photo.png” looks like a PNG image, not text"),
    ("report.txt", b"%PDF-1.7\n...", "“report.txt” looks like a PDF, not text"),
    ("data.bin", b"abc\x00def", "“data.bin” is not a text file (it holds NUL bytes)"),
    ("ctl.txt", b"abc\x02def", "“ctl.txt” is not a text file (it holds control characters)"),
    ("latin1.log", "caf\u00e9 ok".encode("latin-1"), "“latin1.log” is not UTF-8 text (byte 3 is not valid)"),
    ("bad16.txt", codecs.BOM_UTF16_LE + b"\x00\xd8", "“bad16.txt” starts like UTF-16 text but is not valid"),
    ("huge.log", b"x" * (files.MAX_FILE_BYTES + 1), "“huge.log” is 800.0 KB; a message can hold at most 200,000"),
    ("long.log", b"y" * (MAX_INPUT_CHARS + 1), "“long.log” is 200,001 characters; a message can hold at most 200,000"),
])
def test_a_bad_file_is_refused_with_a_sentence_naming_it(name, data, says):
    with pytest.raises(files.BadAttachment) as e:
        files.read(name, data)
    assert str(e.value).startswith(says)


def test_a_name_is_one_line_without_its_folders():
    assert files.clean_name("C:\\Users\\me\\x\ny.log") == "x y.log"
    assert files.clean_name("") == "file" and len(files.clean_name("n" * 500)) == files.MAX_NAME_CHARS


def test_a_name_shows_its_characters_in_the_order_they_are_written():
    # A right-to-left override would make "evil\u202etxt.exe" read as "evilexe.txt".
    assert files.clean_name("evil\u202etxt.exe") == "eviltxt.exe"
    assert files.clean_name("\u2066a\u2069\u200fb.log") == "ab.log"
    assert files.clean_name("تقرير.txt") == "تقرير.txt"  # right-to-left letters themselves stay


def test_the_provider_gets_the_text_then_each_file_fenced_under_its_name():
    sent = files.compose("Why does this fail?", [{"name": "a.log", "text": "x ``` y\n````"}, {"name": "b", "text": "z"}])
    assert sent == ("Why does this fail?\n\nAttached file “a.log”:\n`````\nx ``` y\n````\n`````"
                    "\n\nAttached file “b”:\n```\nz\n```")
    assert files.compose("  ", [{"name": "b", "text": "z"}]) == "Attached file “b”:\n```\nz\n```"


def test_the_limit_counts_the_typed_text_and_the_files_together():
    half = {"name": "half.log", "text": "x" * (MAX_INPUT_CHARS // 2)}
    assert files.too_long("question", [half]) is None
    why = files.too_long("question", [half, dict(half, name="other.log")])
    assert why.startswith("Your message and its files come to 200,") and "“other.log” (100,000)" in why
    assert files.too_long("q" * (MAX_INPUT_CHARS + 1), []).startswith("That message is 200,001 characters")


def test_stored_attachments_are_rebuilt_from_known_fields():
    raw = [{"name": "a/b.log", "size": 3, "text": "abc", "extra": 1}, {"name": "x", "text": 5}, "junk",
           {"text": "no name", "size": True}]
    assert files.stored(raw) == [{"name": "b.log", "size": 3, "text": "abc"},
                                 {"name": "file", "size": 7, "text": "no name"}]
    assert files.stored("nope") == [] and files.stored(None) == []


@pytest.mark.parametrize("size, shown", [(0, "0 bytes"), (1, "1 byte"), (999, "999 bytes"), (1_234, "1.2 KB"),
                                         (5_600_000, "5.6 MB")])
def test_sizes_read_as_file_managers_show_them(size, shown):
    assert files.human_size(size) == shown
