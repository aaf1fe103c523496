"""End to end in a real browser: `streamlit run app.py` against simulated providers, driven by
Playwright in Debian's Chromium (never a browser download). Screenshots go to tests/screenshots/."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.request

import pytest

from core.simulator import Fault
from tests.conftest import IDLE, KEY, ROOT, listening, toml_for

CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "tests" / "screenshots"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage"]

try:
    from playwright.sync_api import expect, sync_playwright

    # Every browser test waits on the page's state; on a loaded CI machine drawing six Plotly charts
    # can take longer than Playwright's default 5 s, so the wait is generous (a hang still fails).
    expect.set_options(timeout=30_000)
except ImportError:  # pragma: no cover
    sync_playwright = None

if sync_playwright is None or not shutil.which(CHROMIUM):
    # CI installs both (.ci/run); there a missing browser is a failure, not a skip.
    if os.environ.get("CI"):
        raise RuntimeError("CI must have playwright and /usr/bin/chromium (see .ci/run)")
    pytest.skip("needs the playwright package and Debian's chromium", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(sims, tmp_path):
    """The real app, started the README's way, on a chain of simulated providers."""
    yield from _serve(sims, tmp_path)


@pytest.fixture
def patient_server(sims, tmp_path):
    """The same, with a primary that may stay silent for a minute before its deadlines act, and no
    stall hedging: what ends a stall then is the user's Stop."""
    yield from _serve(sims, tmp_path, primary_idle=60.0, settings="[stalls]\nhedge = false\n")


@pytest.fixture
def stalling_server(sims, tmp_path):
    """Patient providers with stall hedging on, as by default: a stall is the backup's to take over,
    and a stalled backup waits for the user's Stop (however late a loaded machine delivers it)."""
    yield from _serve(sims, tmp_path, primary_idle=60.0, everyone=True)


def _serve(sims, tmp_path, *, primary_idle: float | None = None, settings: str = "", everyone: bool = False):
    first, second = sims("anthropic"), sims("openai")
    config = tmp_path / "chain.toml"
    text = toml_for([first, second], "[hedging]\nenabled = false\n" + settings)
    if primary_idle is not None:
        text = text.replace(f"idle_timeout = {IDLE}\nfirst_token_timeout = {IDLE}",
                            f"idle_timeout = {primary_idle}\nfirst_token_timeout = {primary_idle}", -1 if everyone else 1)
    config.write_text(text, encoding="utf-8")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "UNDERSTUDY_ADMIN_PASSWORD"}
    env.update(UNDERSTUDY_CONFIG=str(config), SIM_KEY=KEY)
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        listening(proc, port)  # the server prints its URL once it listens: wait for that line
        yield base, first, second
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    """One Chromium for this module's tests; each test gets its own context (cookies, storage)."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    SHOTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # a fresh browser profile
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def ask(page, text):
    box = page.get_by_placeholder("Ask anything…")
    box.fill(text)
    box.press("Enter")


def test_chat_break_the_primary_watch_the_failover(server, page):
    base, first, second = server
    page.goto(base + "/")
    ask(page, "What is an understudy?")
    reply = page.get_by_test_id("stChatMessage").nth(1)
    expect(reply).to_contain_text("w49")  # the whole streamed answer arrived
    expect(reply).to_contain_text("anthropic-0")  # the badge says who answered
    expect(reply).to_contain_text("first token")
    page.screenshot(path=str(SHOTS / "1-chat.png"))

    page.get_by_role("link", name="Chaos").click()  # in-app navigation keeps the session
    page.get_by_role("button", name="Break it").first.click()
    expect(page.get_by_text("forced to fail").first).to_be_visible()
    expect(page.get_by_role("button", name="Heal it")).to_have_count(2)  # the rerun has drawn both providers
    page.screenshot(path=str(SHOTS / "2-chaos.png"), full_page=True)

    page.get_by_role("link", name="Chat").click()
    expect(page.get_by_text("Simulated outage")).to_be_visible()
    expect(page.get_by_test_id("stChatMessage")).to_have_count(2)  # the first exchange is still there
    ask(page, "And who answers now?")
    reply = page.get_by_test_id("stChatMessage").nth(3)
    expect(reply).to_contain_text("openai-test")
    expect(reply).to_contain_text("openai-1")
    expect(reply).to_contain_text("failed/skipped")
    reply.get_by_text("How it got here").click()
    expect(reply.get_by_role("table")).to_contain_text("rate_limited")
    reply.get_by_role("table").scroll_into_view_if_needed()
    # The one-line story above the badge tells it plainly.
    expect(reply).to_contain_text("anthropic-0 rate-limited (429) → openai-1 answered")
    page.screenshot(path=str(SHOTS / "3-failover.png"))
    assert first.chat_requests() == [r for r in first.chat_requests() if "understudy?" in json.dumps(r.body)]

    page.get_by_role("button", name="New chat").click()  # the cache is keyed on the whole conversation
    expect(page.get_by_test_id("stChatMessage")).to_have_count(0)
    ask(page, "What is an understudy?")  # asked before the break: its complete answer was kept
    cached = page.get_by_test_id("stChatMessage").nth(1)
    expect(cached).to_contain_text("Served from the cache")
    expect(cached).to_contain_text("asked")  # … and how long ago
    assert len(first.chat_requests()) == 1 and len(second.chat_requests()) == 1  # nobody was asked

    page.get_by_role("link", name="Status").click()
    page.get_by_role("tab", name="Charts").click()
    expect(page.get_by_text("Time to first token", exact=True)).to_be_visible()
    # The page refreshes itself every few seconds: switch that off, then wait for the state we want
    # (all seven charts drawn) instead of counting at whatever moment the charts happen to be in.
    auto = page.get_by_label("Auto-refresh")
    auto.uncheck(force=True)  # the switch's input is visually hidden behind its styled track
    expect(auto).not_to_be_checked()
    expect(page.locator(".js-plotly-plot")).to_have_count(7)
    expect(page.locator(".js-plotly-plot .main-svg")).not_to_have_count(0)
    page.screenshot(path=str(SHOTS / "4-status.png"), full_page=True)


def test_ops_endpoints_on_the_apps_own_server(server):
    base, first, second = server
    with urllib.request.urlopen(base + "/healthz", timeout=20) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("application/json")
        health = json.loads(r.read())
    assert health["status"] in ("ok", "degraded") and [p["name"] for p in health["providers"]] == [
        "anthropic-0", "openai-1"]
    with urllib.request.urlopen(base + "/metrics", timeout=20) as r:
        text = r.read().decode()
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE understudy_requests_total counter" in text
    assert 'understudy_breaker_state{provider="anthropic-0"} 0' in text
    assert KEY not in text and KEY not in json.dumps(health)


def test_stop_during_a_stall_stops_at_once_and_keeps_what_arrived(patient_server, page):
    base, first, second = patient_server
    first.set_default(Fault("stall", after=12, seconds=60))  # twelve words (to "w2"), then a minute of silence
    page.goto(base + "/")
    ask(page, "Stall on me")
    reply = page.get_by_test_id("stChatMessage").nth(1)
    expect(reply).to_contain_text("w2")  # the words before the stall are on screen
    page.get_by_role("button", name="Stop").click()  # mid-stall: nothing is arriving
    # Playwright waits 30 s at most here; the stall has 60 s left, and no deadline fires before it.
    expect(reply).to_contain_text("stopped")
    text = reply.inner_text()
    assert "w2" in text and "w3" not in text
    assert "anthropic-0" in text  # marked stopped, with the provider its words came from
    assert text.count("Stopped by you") == 1, text  # one line says so, not three
    assert second.chat_requests() == []  # stopped, not failed over
    page.screenshot(path=str(SHOTS / "5b-stopped-mid-stall.png"))


def test_a_stall_is_taken_over_by_its_backup_and_the_answer_says_so(stalling_server, page):
    base, first, second = stalling_server
    first.set_default(Fault("stall", after=12, seconds=60))  # twelve words, then a minute of silence
    page.goto(base + "/")
    ask(page, "Stall on me")
    reply = page.get_by_test_id("stChatMessage").nth(1)
    # Within a minute only the stall backup can have finished it: the primary is still silent.
    expect(reply).to_contain_text("w49")
    expect(reply).to_contain_text("openai-1")
    expect(reply).to_contain_text("stalled, its backup took over")
    expect(reply).to_contain_text("anthropic-0 stalled mid-answer → openai-1 took the answer over")
    text = reply.inner_text()
    assert "anthropic-test" not in text.split("openai-1")[0]  # the stalled words were replaced, not kept
    reply.get_by_text("How it got here").click()
    expect(reply.get_by_role("table")).to_contain_text("stalled mid-answer")
    expect(reply.get_by_role("table")).to_contain_text("went silent mid-answer")
    reply.get_by_role("table").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "5c-stall-taken-over.png"))


def test_stop_after_a_stall_takeover_keeps_the_backups_words_and_names_it(stalling_server, page):
    base, first, second = stalling_server
    first.set_default(Fault("stall", after=12, seconds=60))
    second.set_default(Fault("stall", after=8, seconds=60))  # the backup takes over, then stalls too
    page.goto(base + "/")
    ask(page, "Stall on me twice")
    reply = page.get_by_test_id("stChatMessage").nth(1)
    expect(reply).to_contain_text("openai-test")  # the backup's words replaced the primary's
    expect(reply).to_contain_text("broke off mid-answer")
    page.get_by_role("button", name="Stop").click()
    expect(reply).to_contain_text("stopped")
    text = reply.inner_text()
    assert "openai-1" in text and "anthropic-test" not in text  # kept, and named after where it came from
    expect(reply).to_contain_text("anthropic-0 broke off mid-answer (stalled) before you stopped it")
    assert reply.inner_text().count("Stopped by you") == 1  # said once, in the story line (the badge has the icon)
    page.screenshot(path=str(SHOTS / "5d-stopped-after-takeover.png"))


def test_stop_ends_a_long_answer_and_keeps_what_arrived(server, page):
    base, first, second = server
    first.chunk_delay = 0.25  # the whole answer would take about 15 s: Stop is pressed long before
    page.goto(base + "/")
    ask(page, "Tell me slowly")
    reply = page.get_by_test_id("stChatMessage").nth(1)
    expect(reply).to_contain_text("w1 ")  # part of the answer has streamed in
    page.get_by_role("button", name="Stop").click()
    expect(reply).to_contain_text("stopped")
    assert "w49" not in reply.inner_text() and "Tell me slowly" in reply.inner_text()
    expect(page.get_by_test_id("stChatMessage")).to_have_count(2)
    page.screenshot(path=str(SHOTS / "5-stopped.png"))
