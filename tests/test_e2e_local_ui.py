"""End to end in a real browser, with the local model installed and no keys at all: `streamlit run
app.py` starts demo mode, whose last provider is the real on-device model. Break the three clouds
on the Chaos page, ask, and the answer is real generated text from that model, labelled as a
small on-device model. Screenshots: tests/screenshots/13-*.png."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.demo import LOCAL_MODEL, LOCAL_NAME
from core.local_model import INSTALL, bundled_model
from tests.test_e2e_browser import SHOTS, ask, browser, expect, free_port, page  # noqa: F401 — fixtures
from tests.conftest import ROOT, listening

CLOUDS = ("claude", "gpt", "gemini")


@pytest.fixture
def demo_server(tmp_path):
    """The app as a new user runs it: no keys, no config file, no admin password."""
    if bundled_model() is None:
        why = f"the local model is not installed ({INSTALL})"
        if os.environ.get("UNDERSTUDY_REQUIRE_LOCAL_MODEL"):
            pytest.fail(f"{why}; UNDERSTUDY_REQUIRE_LOCAL_MODEL is set")
        pytest.skip(why)
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and k not in ("UNDERSTUDY_ADMIN_PASSWORD", "UNDERSTUDY_CONFIG", "OLLAMA_HOST")}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
                             "--server.headless", "true", "--server.address", "127.0.0.1"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        listening(proc, port)  # the server prints its URL once it listens
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_with_all_three_clouds_broken_the_on_device_model_answers_for_real(demo_server, page):
    page.goto(demo_server + "/")
    expect(page.get_by_text("Demo mode")).to_be_visible()

    page.get_by_role("link", name="Chaos").click()
    expect(page.get_by_text(f"{LOCAL_NAME} · local").first).to_be_visible()  # the fourth row is the real model
    for i, cloud in enumerate(CLOUDS):
        page.get_by_role("button", name="Break it").nth(i).click()
        expect(page.get_by_text(f"{cloud} forced to fail").first).to_be_visible()
    expect(page.get_by_text("🔴 failing:")).to_have_count(3)
    page.screenshot(path=str(SHOTS / "13-chaos-clouds-broken.png"), full_page=True)

    page.get_by_role("link", name="Chat").click()
    ask(page, "What is the capital of Italy?")
    reply = page.get_by_test_id("stChatMessage").nth(1)
    expect(reply).to_contain_text("first token", timeout=90_000)  # the badge: the answer is complete
    expect(reply).to_contain_text(LOCAL_NAME)
    expect(reply).to_contain_text(LOCAL_MODEL)  # "… (small on-device model, real)"
    text = reply.inner_text()
    assert "[Simulated" not in text and "simulated model" not in text
    for cloud in CLOUDS:
        assert cloud in text  # the story line / badge names the clouds that failed before it
    page.screenshot(path=str(SHOTS / "13-on-device-answer.png"))

    page.get_by_role("link", name="Status").click()
    auto = page.get_by_label("Auto-refresh")
    auto.uncheck(force=True)
    expect(auto).not_to_be_checked()
    card = page.get_by_test_id("stColumn").filter(has_text=LOCAL_MODEL).last  # its card
    expect(card).to_contain_text("Health: ok")  # its probe reached the model process
    expect(card).to_contain_text("Breaker: ")
    page.screenshot(path=str(SHOTS / "13-status.png"), full_page=True)
