"""Conversations in a real browser: chat, press F5, the same conversation is back; this browser's
cookie lists it, another browser's doesn't. `streamlit run app.py` on simulated providers, driven by
Playwright in Debian's Chromium. Screenshots go to tests/screenshots/."""

from __future__ import annotations

import http.server
import json
import re
import threading

from core.markdown import JOINER
from tests.test_e2e_browser import ARGS, CHROMIUM, SHOTS, ask, expect, server, sync_playwright  # noqa: F401

CONVERSATION_URL = re.compile(r"\?c=([0-9a-f]{32})$")


def test_f5_brings_the_conversation_back_and_the_list_follows_the_browser(server):
    base, first, second = server
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})  # one browser, its cookies
            page = context.new_page()
            page.set_default_timeout(30_000)
            page.goto(base + "/")
            ask(page, "What is an understudy?")
            messages = page.get_by_test_id("stChatMessage")
            expect(messages.nth(1)).to_contain_text("w49")
            expect(page).to_have_url(CONVERSATION_URL)
            cid = CONVERSATION_URL.search(page.url).group(1)
            sidebar = page.get_by_test_id("stSidebar")
            expect(sidebar.get_by_role("button", name="What is an understudy?")).to_be_visible()
            page.screenshot(path=str(SHOTS / "6-conversation.png"))

            page.reload()  # F5
            expect(messages).to_have_count(2)
            expect(messages.nth(0)).to_contain_text("What is an understudy?")
            expect(messages.nth(1)).to_contain_text("w49")
            expect(messages.nth(1)).to_contain_text("anthropic-0")  # the badge came back too
            messages.nth(1).get_by_text("How it got here").click()
            row = messages.nth(1).get_by_role("table").get_by_role("row").nth(1)
            expect(row).to_contain_text("anthropic-0")
            expect(row).to_be_visible()
            assert page.url.endswith(f"?c={cid}")
            expect(sidebar.get_by_role("button", name="What is an understudy?")).to_be_visible()
            sidebar.get_by_test_id("stPopover").first.get_by_role("button").click()  # the ⋯ next to it
            expect(page.get_by_role("button", name="Delete…")).to_be_visible()
            page.screenshot(path=str(SHOTS / "7-after-f5.png"))
            page.keyboard.press("Escape")

            same = context.new_page()  # another tab of the same browser: the same cookie
            same.goto(base + "/")
            expect(same.get_by_test_id("stChatMessage")).to_have_count(0)  # a new chat...
            item = same.get_by_test_id("stSidebar").get_by_role("button", name="What is an understudy?")
            item.click()  # ...with this browser's conversations listed
            expect(same.get_by_test_id("stChatMessage")).to_have_count(2)
            expect(same).to_have_url(re.compile(rf"\?c={cid}$"))
            same.screenshot(path=str(SHOTS / "8-same-browser-list.png"))

            # Both tabs on one conversation carry on: the second tab's turn can't drop the first's.
            ask(page, "Asked in the first tab")
            expect(messages.nth(3)).to_contain_text("w49")
            ask(same, "Asked in the second tab")
            notice = same.get_by_text("This conversation was changed in another tab or browser")
            expect(notice).to_be_visible()  # without another click: the tab watches its save
            expect(same).to_have_url(CONVERSATION_URL)
            fork = CONVERSATION_URL.search(same.url).group(1)
            assert fork != cid
            expect(same.get_by_test_id("stChatMessage").nth(2)).to_contain_text("Asked in the second tab")
            expect(same.get_by_test_id("stSidebar").get_by_role("button", name="Copy · What is an understudy?")) \
                .to_be_visible()
            same.screenshot(path=str(SHOTS / "8b-two-tabs-fork.png"))
            page.reload()  # the first tab's conversation is as the first tab left it
            expect(messages).to_have_count(4)
            expect(messages.nth(2)).to_contain_text("Asked in the first tab")
            expect(page.get_by_text("This conversation was changed in another tab")).to_have_count(0)

            stranger = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()  # another browser
            stranger.goto(base + "/")
            expect(stranger.get_by_text("Nothing yet: your conversations will be listed here.")).to_be_visible()
            expect(stranger.get_by_test_id("stSidebar").get_by_role("button", name="What is an understudy?")) \
                .to_have_count(0)
            stranger.goto(base + f"/?c={cid}")  # but the link itself opens it, read as it is
            expect(stranger.get_by_test_id("stChatMessage")).to_have_count(4)
            expect(stranger.get_by_text("shared with you by its link")).to_be_visible()
            stranger.screenshot(path=str(SHOTS / "9-shared-link.png"))

            stranger.goto(base + "/?c=not-a-conversation")
            expect(stranger.get_by_text("conversation id is not valid")).to_be_visible()
            expect(stranger.get_by_placeholder("Ask anything…")).to_be_visible()
            expect(stranger.get_by_text("Nothing yet: your conversations will be listed here.")).to_be_visible()
            stranger.screenshot(path=str(SHOTS / "10-bad-link.png"))
        finally:
            browser.close()


class Pixels:
    """The tracking server a crafted import points at: a real HTTP server on 127.0.0.1 that
    records every request (an image the page fetched would be one)."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 — http.server's name
                hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_crafted_import_fetches_nothing_and_its_badge_links_nowhere(server):
    base, first, second = server
    pixels = Pixels()
    evil = pixels.url
    crafted = {"title": f"![t]({evil}/title.png) **Moons**", "messages": [
        {"role": "user", "content": f"Which moon? ![]({evil}/user.png) ![a][r]\n\n[r]: {evil}/ref.png"},
        {"role": "assistant", "content": f"**Titan.** ![x]({evil}/answer.png) <img src=\"{evil}/html.png\">",
         "meta": {"provider": f"[support]({evil}/phish)", "model": f"![m]({evil}/model.png)",
                  "notice": f":red[alarm] ![n]({evil}/notice.png)", "elapsed_ms": 10.0,
                  "attempts": [{"provider": f"![p]({evil}/p.png)", "model": "m", "outcome": "error",
                                "error_kind": f"[why]({evil}/why)", "latency_ms": 5.0,
                                "detail": f"a | b\n![d]({evil}/detail.png)"}]}}]}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(base + "/")
            page.get_by_test_id("stSidebar").locator("input[type=file]").set_input_files(
                files=[{"name": "crafted.json", "mimeType": "application/json",
                        "buffer": json.dumps(crafted).encode()}])
            messages = page.get_by_test_id("stChatMessage")
            expect(messages).to_have_count(2)
            reply = messages.nth(1)
            expect(reply.locator("strong", has_text="Titan.")).to_be_visible()  # its own Markdown still works
            reply.get_by_text("How it got here").click()
            expect(reply.get_by_role("table").get_by_role("row")).to_have_count(2)  # header and one attempt
            seen = reply.inner_text().replace(JOINER, "")  # (zero width: it keeps a URL from becoming a link)
            assert f"[support]({evil}/phish)" in seen  # the badge shows the value as text
            assert f"[why]({evil}/why)" in seen and f"a | b ![d]({evil}/detail.png)" in seen  # so does the table
            assert f":red[alarm] ![n]({evil}/notice.png)" in seen  # not a Streamlit colour directive, nor an image
            sidebar = page.get_by_test_id("stSidebar")
            title = f"![t]({evil}/title.png) **Moons**".replace("//", JOINER + "//")
            expect(sidebar.get_by_role("button", name=title, exact=True)).to_be_visible()  # as text, no image
            page.screenshot(path=str(SHOTS / "11-crafted-import.png"))

            # Drawn, and not one image or badge link to the file's server: so it was never asked.
            assert page.locator(f"img[src^='{evil}']").count() == 0
            assert page.locator("[data-testid=stCaptionContainer] a, table a, button a").count() == 0
            assert pixels.hits == []
        finally:
            browser.close()
            pixels.close()
