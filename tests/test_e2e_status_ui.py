"""The Status page in a real browser (issue 12, items 8–12 and 16): the tiles recover after "Reset
everything" and "Probe now", the overall status line says what `/healthz` says, and the page at a
desktop's and a phone's size. Screenshots: tests/screenshots/12-status-*.png."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.test_e2e_browser import SHOTS, ask, browser, expect, server  # noqa: F401 — fixtures

DESKTOP = {"width": 1400, "height": 950}
PHONE = {"width": 390, "height": 844}


def summary(base: str, timeout: float = 20) -> str:
    """The one-line verdict `/healthz` reports (200 or 503 alike)."""
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=timeout) as r:
            return json.loads(r.read())["summary"]
    except urllib.error.HTTPError as e:  # 503: down
        return json.loads(e.read())["summary"]


@pytest.fixture
def ready(server):
    """The app, once its router is built (`/healthz` builds it): on a loaded machine importing the
    four SDKs takes longer than a page's wait for its first element."""
    summary(server[0], timeout=300)
    return server


def open_page(browser, viewport, **kw):
    context = browser.new_context(viewport=viewport, **kw)
    page = context.new_page()
    page.set_default_timeout(30_000)
    return context, page


def still(page) -> None:
    """Auto-refresh off, so the page stays as it is while it is checked and photographed; then
    wait for the rerun that follows to have drawn the tiles' counters."""
    auto = page.get_by_label("Auto-refresh")
    auto.uncheck(force=True)  # the switch's input is visually hidden behind its styled track
    expect(auto).not_to_be_checked()
    expect(page.get_by_test_id("stMetricLabel").filter(has_text="Requests")).to_be_visible()
    expect(page.get_by_text("The same verdict as")).to_be_visible()


def whole(page, path) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its main element, so a full-page
    screenshot of the window would stop at the fold; the window is made as tall as the page for it."""
    size = page.viewport_size
    height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], height)})
    page.screenshot(path=str(SHOTS / path))
    page.set_viewport_size(size)


def verdict_line(page):
    return page.locator(".st-key-verdict [data-testid=stAlertContainer]")


def go(page, base: str, name: str) -> None:
    """To a page by the app's own navigation (it keeps the session); on a phone the sidebar is
    opened for it, and the app closes it once the page is picked (pages/shared.py)."""
    link = page.get_by_role("link", name=name)
    link.wait_for(state="attached")  # the app has drawn its navigation
    phone = page.viewport_size["width"] < 640
    if phone:
        page.get_by_test_id("stExpandSidebarButton").click()
    link.click()
    if phone:
        # Waited for, never raced: clicking its close button while the app's own click closes it
        # left the test waiting on a button that had gone (seen in CI with another job loading the machine).
        expect(page.get_by_test_id("stExpandSidebarButton")).to_be_visible()


def break_primary_and_ask(page, base: str, n: int = 3) -> None:
    """Break the primary on the Chaos page (HTTP 429), then ask `n` questions: its breaker opens."""
    page.goto(base + "/")
    go(page, base, "Chaos")
    page.get_by_role("button", name="Break it").first.click()
    expect(page.get_by_text("forced to fail").first).to_be_visible()
    go(page, base, "Chat")
    for i in range(n):
        ask(page, f"Question number {i}?")
        expect(page.get_by_test_id("stChatMessage").nth(2 * i + 1)).to_contain_text("openai-1")


def test_tiles_recover_after_reset_everything_and_probe_now(ready, browser):
    base, first, second = ready
    context, page = open_page(browser, DESKTOP)
    try:
        break_primary_and_ask(page, base)
        go(page, base, "Status")
        still(page)
        expect(verdict_line(page)).to_contain_text("Degraded: anthropic-0 down, openai-1 answering")
        assert summary(base) == "Degraded: anthropic-0 down, openai-1 answering"
        expect(page.get_by_text("Health: down")).to_have_count(1)

        go(page, base, "Chaos")
        page.get_by_role("button", name="Reset everything").click()
        expect(page.get_by_text("forced to fail")).to_have_count(0)
        go(page, base, "Status")
        still(page)
        page.get_by_role("button", name="Probe now").click()
        expect(page.get_by_text("Health: ok")).to_have_count(2)  # both tiles, at once
        expect(page.get_by_text("Health: degraded")).to_have_count(0)
        expect(verdict_line(page)).to_contain_text("All systems answering")
        assert summary(base) == "All systems answering"
        page.screenshot(path=str(SHOTS / "12-status-recovered.png"))

        # The outage as the other tabs remember it: the bars and one incident, ended by the reset.
        page.get_by_role("tab", name="Uptime & incidents").click()
        expect(page.get_by_test_id("stDataFrame")).to_be_visible()
        expect(page.locator('[data-testid="uptime-anthropic-0"]')).to_be_visible()
        page.screenshot(path=str(SHOTS / "12-status-uptime-desktop.png"))
        page.get_by_role("tab", name="Charts").click()
        expect(page.locator(".js-plotly-plot .main-svg")).not_to_have_count(0)
        expect(page.get_by_text("Breakers", exact=True)).to_be_visible()
        whole(page, "12-status-charts-desktop.png")
    finally:
        context.close()


def test_the_overall_status_line_says_what_healthz_says(ready, browser):
    base, first, second = ready
    context, page = open_page(browser, DESKTOP)
    try:
        page.goto(base + "/")
        go(page, base, "Status")
        expect(verdict_line(page)).to_contain_text("All systems answering")
        assert summary(base) == "All systems answering"
        page.screenshot(path=str(SHOTS / "12-status-desktop.png"))
    finally:
        context.close()


def test_status_on_a_phone_is_in_tabs_and_its_legends_are_clear(ready, browser):
    base, first, second = ready
    context, page = open_page(browser, PHONE, is_mobile=True, has_touch=True, device_scale_factor=2)
    try:
        break_primary_and_ask(page, base, n=4)
        go(page, base, "Status")
        still(page)
        expect(verdict_line(page)).to_contain_text("Degraded: anthropic-0 down")
        height = page.evaluate("document.querySelector('[data-testid=stMain]').scrollHeight")
        whole(page, "12-status-phone.png")
        page.get_by_role("tab", name="Charts").click()
        expect(page.locator(".js-plotly-plot .main-svg")).not_to_have_count(0)
        expect(page.locator(".modebar-container .modebar")).to_have_count(0)  # no toolbar over the legend
        whole(page, "12-status-phone-charts.png")
        page.get_by_role("tab", name="Uptime & incidents").click()
        expect(page.locator('[data-testid="uptime-anthropic-0"]')).to_be_visible()
        whole(page, "12-status-phone-uptime.png")
        assert height < 3000, f"the first tab is {height} px tall on a phone"  # was 5,400 px, all in one
    finally:
        context.close()
