"""The chat box in a real browser (Debian's Chromium through Playwright, the app started the
README's way on simulated providers): a 5,000-line paste, attached text files (shown, kept across
a reload, in both downloads, a bad one refused without losing what was typed), and each message's
copy button and time. Screenshots go to tests/screenshots/12-*.png.

The paste is timed two ways and the figures printed (run with -s to see them), never asserted:
- insertText, as Playwright's fill(), IMEs and some clipboard tools deliver text: the path that
  froze the tab (Chromium inserts such text a line at a time, in time growing with the square of
  the lines: 5,000 lines took over a minute, in a bare <textarea> as well);
- a real paste (the clipboard, Ctrl+V), which Chromium inserts in one piece.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.test_e2e_browser import SHOTS, ask, browser, expect, page, server  # noqa: F401 (fixtures)

LINES = 5_000
# 5,000 lines of a log, 154,999 characters: the paste (149 k), within the 200,000 limit.
LOG = "\n".join(f"10:{i // 60 % 60:02d}:{i % 60:02d} INFO req {i:04d} ok {i % 97:02d}ms" for i in range(LINES))
FILE = ("2026-12-04 10:00:01 ERROR db *timeout* after 30 s\n"
        "2026-12-04 10:00:02 INFO retry 1. ok — ünïcode ✓ مرحبا\n")
SIZE = len(FILE.encode())
PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


@pytest.fixture
def clip_page(browser):  # noqa: F811
    """A page whose clipboard the test may write and read (http://127.0.0.1 counts as secure)."""
    SHOTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def box(page):
    return page.get_by_test_id("stChatInputTextArea")


def open_chat(page, base: str) -> None:
    """The chat page, once its box is drawn. A new server's first page starts the router and the
    database: on a loaded two-core machine that alone can take most of Playwright's 30 s."""
    page.goto(base + "/")
    expect(box(page)).to_be_visible(timeout=120_000)


def timed(what: str, start: float) -> None:
    print(f"\n[paste] {what}: {time.perf_counter() - start:.2f} s")


def attach(page, *files: tuple[str, bytes, str]) -> None:
    """Attach files with the chat box's own file input, and wait until they are uploaded."""
    page.get_by_test_id("stChatInput").locator("input[type=file]").set_input_files(
        [{"name": name, "mimeType": mime, "buffer": data} for name, data, mime in files])
    expect(page.get_by_test_id("stFileChip")).to_have_count(len(files))


def send_when_uploaded(page) -> None:
    """Press Enter once the box will take it: while a file is still uploading (3 MB on a loaded
    machine takes a while) Streamlit ignores Enter and keeps Send disabled, as it should."""
    expect(page.get_by_role("button", name="Send message")).to_be_enabled()
    box(page).press("Enter")


def test_a_5000_line_paste_leaves_the_box_responsive_and_is_sent_whole(server, clip_page):
    base, first, second = server
    page = clip_page
    open_chat(page, base)
    area = box(page)
    area.click()

    start = time.perf_counter()
    page.keyboard.insert_text(LOG)  # one "insertText" input: the slow path before
    expect(area).to_have_value(LOG)
    timed(f"{LINES:,} lines ({len(LOG):,} characters) by insertText", start)
    page.keyboard.type(" typed after")  # the box still takes keys at once
    expect(area).to_have_value(LOG + " typed after")

    area.press("Control+A")
    area.press("Delete")
    expect(area).to_have_value("")
    page.evaluate("text => navigator.clipboard.writeText(text)", LOG)
    start = time.perf_counter()
    area.press("Control+V")  # a real paste
    expect(area).to_have_value(LOG)
    timed(f"{LINES:,} lines ({len(LOG):,} characters) by Ctrl+V", start)
    page.screenshot(path=str(SHOTS / "12-01-paste-5000-lines.png"))

    area.press("Enter")
    mine = page.get_by_test_id("stChatMessage").nth(0)
    expect(mine).to_contain_text(f"Show all — 5,000 lines, {len(LOG):,} characters")
    expect(mine).to_contain_text("10:00:24 INFO req 0024 ok 24ms …")  # its start; the rest collapsed
    reply = page.get_by_test_id("stChatMessage").nth(1)
    expect(reply.get_by_role("button", name="Copy message")).to_be_visible()  # the answer is complete
    sent = [r.body["messages"][-1]["content"] for r in first.chat_requests() + second.chat_requests()]
    assert LOG in sent  # the whole log reached the provider
    page.screenshot(path=str(SHOTS / "12-01-paste-5000-lines-sent.png"))


def test_an_attached_file_is_shown_kept_across_a_reload_and_downloaded(server, page):  # noqa: F811
    base, first, second = server
    open_chat(page, base)
    attach(page, ("server.log", FILE.encode(), "text/plain"))
    box(page).fill("What failed here?")
    send_when_uploaded(page)
    mine = page.get_by_test_id("stChatMessage").nth(0)
    expect(mine).to_contain_text("What failed here?")
    expect(mine).to_contain_text(f"📎 server.log · {SIZE} bytes · 2 lines")
    expect(page.get_by_test_id("stChatMessage").nth(1).get_by_role("button", name="Copy message")).to_be_visible()
    assert any(FILE.rstrip("\n") in r.body["messages"][-1]["content"] for r in first.chat_requests())
    mine.get_by_text("server.log").click()  # its text, collapsed until asked for
    expect(mine.get_by_test_id("stCode")).to_contain_text("ERROR db *timeout* after 30 s")
    page.screenshot(path=str(SHOTS / "12-01-attached-file.png"))

    expect(page).to_have_url(re.compile(r"\?c=[0-9a-f]{32}$"))
    page.reload()  # F5: the conversation comes back from the database, file and all
    mine = page.get_by_test_id("stChatMessage").nth(0)
    expect(mine).to_contain_text(f"📎 server.log · {SIZE} bytes · 2 lines")

    with page.expect_download() as download:
        page.get_by_role("button", name="Download JSON").click()
    doc = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert doc["messages"][0]["attachments"] == [{"name": "server.log", "size": SIZE, "text": FILE}]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m["time"]) for m in doc["messages"])
    with page.expect_download() as download:
        page.get_by_role("button", name="Download Markdown").click()
    markdown = open(download.value.path(), encoding="utf-8").read()
    assert f"📎 server\\.log · {SIZE} bytes" in markdown and "ERROR db *timeout* after 30 s" in markdown
    assert re.search(r"\*\*You\*\* · \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", markdown)  # the browser's zone (UTC here)


def test_a_bad_file_is_explained_and_what_was_typed_is_not_lost(server, page):  # noqa: F811
    base, first, second = server
    open_chat(page, base)
    attach(page, ("notes.txt", b"fine\n", "text/plain"), ("photo.png", PNG, "image/png"),
           ("huge.log", b"x\n" * 1_500_000, "text/plain"))
    typed = "Please compare these two  files\nsecond line, as typed"
    box(page).fill(typed)
    send_when_uploaded(page)
    expect(page.get_by_text("“photo.png” looks like a PNG image, not text")).to_be_visible()
    expect(page.get_by_text("“huge.log” is 3.0 MB; a message can hold at most 200,000 characters")).to_be_visible()
    expect(page.get_by_text("These were fine: “notes.txt”.")).to_be_visible()
    expect(box(page)).to_have_value(typed)  # back in the box, exactly
    expect(page.get_by_test_id("stChatMessage")).to_have_count(0)  # nothing was sent
    assert first.chat_requests() == [] and second.chat_requests() == []
    page.screenshot(path=str(SHOTS / "12-01-bad-file.png"))


def test_each_message_has_a_copy_button_and_its_time(server, clip_page):
    base, first, second = server
    page = clip_page
    open_chat(page, base)
    ask(page, "What is an **understudy**?\n<b>as typed</b>")
    messages = page.get_by_test_id("stChatMessage")
    expect(messages.nth(1)).to_contain_text("w49")
    copies = page.get_by_role("button", name="Copy message")
    expect(copies).to_have_count(2)  # one for each message, the user's and the answer
    times = page.locator("time.at")
    expect(times).to_have_count(2)
    for i in range(2):
        expect(times.nth(i)).to_have_text(re.compile(r"^\d{1,2}:\d\d( [AP]M)?$"))  # today: the time alone
        expect(times.nth(i)).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
        expect(times.nth(i)).to_have_attribute("title", re.compile(r"\d{4}"))  # the full date on hover

    copies.nth(0).click()
    expect(copies.nth(0)).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "What is an **understudy**?\n<b>as typed</b>"
    copies.nth(1).click()
    expect(copies.nth(1)).to_contain_text("Copied")
    answer = page.evaluate("navigator.clipboard.readText()")
    assert answer.startswith("Simulated answer from anthropic-test") and answer.endswith("w49")  # its own text
    messages.nth(1).hover()
    page.screenshot(path=str(SHOTS / "12-06-copy-and-timestamps.png"))
