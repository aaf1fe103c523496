"""The Chaos page, the banners, direct links and the phone layout in a real browser (issue 12):
`streamlit run app.py` in demo mode (no keys: four simulated providers), driven by Playwright in
Debian's Chromium. Screenshots go to tests/screenshots/12-*.png."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import sys

import pytest

from tests.clock import wait_until
from tests.conftest import ROOT, listening
from tests.test_e2e_browser import SHOTS, ask, browser, expect, free_port  # noqa: F401 — browser: the fixture

PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DESKTOP = {"viewport": {"width": 1400, "height": 950}}
STARTUP = 90_000  # ms
SCENARIO_END = 90_000  # ms: "Everything down" lasts 40 s; a loaded machine gets a margin


@pytest.fixture
def demo(tmp_path):
    """The app as a new user starts it: no keys, no configuration file, demo mode."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and k not in ("OLLAMA_HOST", "UNDERSTUDY_CONFIG", "UNDERSTUDY_ADMIN_PASSWORD")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        listening(proc, port)  # it prints its URL once it listens
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def contexts(browser):
    """contexts(**options) -> a fresh browser profile; all are closed after the test."""
    made = []

    def make(**options):
        SHOTS.mkdir(exist_ok=True)
        context = browser.new_context(**options)
        context.set_default_timeout(30_000)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def failures(page) -> list[str]:
    """Start recording what a user's console would show going wrong: 4xx/5xx responses and errors."""
    seen: list[str] = []
    page.on("response", lambda r: seen.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: seen.append(f"console: {m.text}") if m.type == "error" else None)
    return seen


def settled(page, title: str) -> None:
    """The page has connected and drawn its title, and its widgets have loaded. (The first page after
    a start waits for the router: demo mode starts four simulated servers, slow on a busy machine.)"""
    expect(page.get_by_role("heading", name=title)).to_be_visible(timeout=STARTUP)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0)  # not "running…"


def page_height(page) -> int:
    return page.evaluate("() => Math.ceil(document.querySelector('[data-testid=\"stMainBlockContainer\"]')"
                         ".getBoundingClientRect().height)")


def sideways_overflow(page) -> int:
    """How far the page can scroll sideways (0: it fits the screen's width)."""
    return page.evaluate("() => Math.max(...Array.from(document.querySelectorAll('[data-testid=\"stMain\"], "
                         ".stMain, html, body')).map(e => e.scrollWidth - e.clientWidth))")


def whole_page_shot(page, name: str) -> None:
    """Streamlit scrolls inside its main section, so a full-page screenshot would show one screen:
    stretch the viewport to the page's height for the shot."""
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], page_height(page) + 120)})
    page.screenshot(path=str(SHOTS / name))
    page.set_viewport_size(size)


def scenario_playing(base: str) -> bool:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=20) as r:
            body = r.read()
    except urllib.error.HTTPError as e:  # 503 while every provider is down: the body says the same
        body = e.read()
    return json.loads(body)["chaos"]["scenario"] is not None


def choose(page, label: str, option: str) -> None:
    """Pick `option` in the first selectbox labelled `label`, and wait until that box shows it. A
    rerun landing between the two clicks can send the pick to another card's box (seen once in a
    full run: Claude was then broken with its default fault): then it is picked again."""
    box = page.get_by_role("combobox", name=label).first
    for _ in range(3):
        page.get_by_test_id("stSelectbox").filter(has_text=label).first.click()
        page.get_by_role("option", name=option, exact=True).click()
        try:
            expect(box).to_have_value(option, timeout=10_000)
            return
        except AssertionError:
            continue
    expect(box).to_have_value(option)


# -- 17: direct links --------------------------------------------------------------------------------
def test_each_page_opens_from_a_direct_link_without_a_404(demo, contexts):
    # The server's first visitor opens /status: that once put Streamlit in its old multipage mode
    # for every session (a sidebar of file names, pages run without app.py).
    context = contexts(**DESKTOP)
    for path, title in (("/status", "📈 Status"), ("/chaos", "🧨 Chaos"), ("/followups", "📥 Follow-ups"),
                        ("/chaos?tab=Scenarios", "🧨 Chaos"), ("/", "💬 Understudy")):
        page = context.new_page()
        seen = failures(page)
        page.goto(demo + path)
        settled(page, title)
        assert seen == [], (path, seen)
        assert page.url == demo + path  # still the page the link named
        expect(page.get_by_test_id("stSidebarNav")).to_have_text("💬Chat📈Status🧨Chaos📥Follow-ups")
        page.close()


# -- 8, 14: a scenario's end clears every banner, and the Chaos page agrees with itself --------------
@pytest.mark.timeout(300)  # the scenario lasts 40 s, and three pages load on a busy machine
def test_a_scenarios_end_clears_the_banner_on_every_page(demo, contexts):
    context = contexts(**DESKTOP)
    chaos = context.new_page()
    errors = {"🧨 Chaos": failures(chaos)}  # a page that breaks says so in its console
    chaos.goto(demo + "/chaos?tab=Scenarios")
    settled(chaos, "🧨 Chaos")
    choose(chaos, "Scenario", "Everything down")
    chaos.get_by_role("button", name="Play").click()
    expect(chaos.get_by_test_id("stProgress")).to_contain_text("Everything down")
    chaos.get_by_role("tab", name="Providers").click()  # every card says it, and why (for 30 s)
    expect(chaos.get_by_text("from the scenario Everything down")).to_have_count(4)
    status, chat = context.new_page(), context.new_page()
    for page, path, title in ((status, "/status", "📈 Status"), (chat, "/", "💬 Understudy")):
        errors[title] = failures(page)
        page.goto(demo + path)
        settled(page, title)
    # Each page is looked at in front, as a person would: Chromium gives a tab behind others no
    # animation frames, so its drawing (not the app's state) can lag until it is shown.
    for page in (status, chat, chaos):
        page.bring_to_front()
        expect(page.get_by_text("scenario Everything down at")).to_be_visible()
    chaos.get_by_role("tab", name="Scenarios").click()
    whole_page_shot(chaos, "12-chaos-scenario-playing.png")

    # It ends by itself after 40 s. Every page stays open across the end, as a person leaves them,
    # and catches up by itself: at its next refresh no page says it plays, and the Chaos page's
    # cards agree. Wait on the server's own state (its /healthz chaos section), then on each page.
    # (The Chaos page used to go blank here in most runs, with other tabs of the app open: a full
    # run and a timed fragment's run, queued together, left its drawing at places the browser no
    # longer had: "Cannot set a node at a delta path" in its console. See app.py and
    # pages/shared.py banners.)
    wait_until(lambda: not scenario_playing(demo), "the scenario to end", timeout=SCENARIO_END / 1000)
    for page, title in ((status, "📈 Status"), (chat, "💬 Understudy"), (chaos, "🧨 Chaos")):
        page.bring_to_front()
        expect(page.get_by_role("heading", name=title)).to_be_visible()  # not a blank page
        expect(page.get_by_text("Simulated outage")).to_have_count(0)
    expect(chaos.get_by_text("No scenario playing.")).to_be_visible()
    chaos.get_by_role("tab", name="Providers").click()
    expect(chaos.get_by_text("healthy (no fault)")).to_have_count(4)
    expect(chaos.get_by_text("failing:")).to_have_count(0)
    assert errors == {"🧨 Chaos": [], "📈 Status": [], "💬 Understudy": []}, errors
    status.screenshot(path=str(SHOTS / "12-chaos-banner-cleared-status.png"))


# -- 16: a phone --------------------------------------------------------------------------------------
def test_on_a_phone_chaos_is_short_the_sidebar_closes_and_the_timeline_fits(demo, contexts):
    page = contexts(**PHONE).new_page()
    page.goto(demo + "/chaos")
    settled(page, "🧨 Chaos")
    notice = page.locator(".st-key-demo_notice")
    expect(notice).to_be_visible()
    assert notice.bounding_box()["height"] < 844 / 5  # one compact notice, not half the screen
    page.get_by_role("button", name="Break it").first.click()  # Claude: HTTP 429
    expect(page.get_by_text("failing: HTTP 429")).to_be_visible()
    expect(page.get_by_text("forced to fail")).to_be_visible()
    assert sideways_overflow(page) == 0
    assert page_height(page) < 3000, page_height(page)  # was 4,560 px on a desktop, all sections in one column
    whole_page_shot(page, "12-phone-chaos.png")

    # Choose a page in the open sidebar: the sidebar gets out of the way.
    page.get_by_test_id("stExpandSidebarButton").click()
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_have_attribute("data-collapsed", "false")
    sidebar.get_by_role("link", name="Chat").click()
    settled(page, "💬 Understudy")
    expect(sidebar).to_have_attribute("data-collapsed", "true")

    ask(page, "What is an understudy?")
    reply = page.get_by_test_id("stChatMessage").nth(1)
    expect(reply).to_contain_text("claude rate-limited (429) → gpt answered")
    reply.get_by_text("How it got here").click()
    table = reply.get_by_role("table")
    expect(table).to_contain_text("rate_limited")
    assert sideways_overflow(page) == 0  # the table scrolls inside itself, not the page
    assert table.evaluate("t => t.getBoundingClientRect().right") <= 390
    table.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "12-phone-chat.png"))

    notice.get_by_role("button").last.click()  # the ×: hidden for this session
    expect(notice).to_have_count(0)


# -- 15, 13: the desktop Chaos page and the load generator -------------------------------------------
def test_on_a_desktop_the_load_generator_reports_numbers(demo, contexts):
    page = contexts(**DESKTOP).new_page()
    page.goto(demo + "/chaos")
    settled(page, "🧨 Chaos")
    choose(page, "Fault", "Connection reset")  # the first card: Claude
    page.get_by_role("button", name="Break it").first.click()
    expect(page.get_by_text("failing: connection reset")).to_be_visible()
    expect(page.get_by_role("combobox", name="Fault").first).to_have_value("Connection reset")  # the controls agree
    whole_page_shot(page, "12-chaos-desktop.png")

    page.get_by_role("tab", name="Load").click()
    page.get_by_label("Questions").fill("12")
    page.get_by_label("Questions").press("Enter")
    page.get_by_role("button", name="Send").click()
    progress = page.get_by_test_id("stProgress")
    expect(progress).to_be_visible()
    assert progress.bounding_box()["y"] < 950  # visible without scrolling
    expect(page.get_by_text("12 questions in")).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stMetric").filter(has_text="p95 latency")).to_contain_text(" s")
    mix = page.get_by_test_id("stCaptionContainer").filter(has_text="served by")
    expect(mix).to_contain_text("gpt: 12")  # Claude resets every connection: the next one answers them all
    page.screenshot(path=str(SHOTS / "12-chaos-load.png"))
