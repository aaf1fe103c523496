"""The fleet in a real browser: two `streamlit run app.py` processes on one real Redis and one real
PostgreSQL, as behind a load balancer. A tester breaks Claude on replica A's Chaos page; on
replica B the banner shows it and the answer comes from the fallback; B's Status page shows both
replicas' traffic, and its Replicas filter picks one."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import KEY, ROOT, listening, toml_for
from tests.test_e2e_browser import ARGS, CHROMIUM, SHOTS, ask, expect, free_port, sync_playwright


@pytest.fixture
def replicas(sims, fleet_env, tmp_path):
    first, second = sims("anthropic"), sims("openai")
    config = tmp_path / "chain.toml"
    config.write_text(toml_for([first, second], "[hedging]\nenabled = false\n"), encoding="utf-8")
    procs, bases = [], {}
    try:
        for name in ("A", "B"):
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")
                   and k != "UNDERSTUDY_ADMIN_PASSWORD"}
            env.update(fleet_env, UNDERSTUDY_CONFIG=str(config), SIM_KEY=KEY, UNDERSTUDY_REPLICA=name,
                       UNDERSTUDY_DATA_DIR=str(tmp_path / f"data-{name}"))
            proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                     "--server.headless", "true", "--server.address", "127.0.0.1"],
                                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            procs.append(proc)
            listening(proc, port, f"replica {name}")  # it prints its URL once it listens
            bases[name] = f"http://127.0.0.1:{port}"
        yield bases, first, second
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=20)


def test_chaos_on_one_replica_shows_and_strikes_on_the_other_and_status_shows_the_fleet(replicas):
    bases, first, second = replicas
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        a = browser.new_page(viewport={"width": 1400, "height": 1000})
        b = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()  # another browser
        for page in (a, b):
            page.set_default_timeout(30_000)

        a.goto(bases["A"] + "/")
        ask(a, "Asked on replica A")
        expect(a.get_by_test_id("stChatMessage").nth(1)).to_contain_text("anthropic-0")
        a.goto(bases["A"] + "/chaos")
        a.get_by_role("button", name="Break it").first.click()
        expect(a.get_by_text("forced to fail").first).to_be_visible()

        b.goto(bases["B"] + "/")
        expect(b.get_by_text("Simulated outage")).to_be_visible()  # B's banner shows what A set
        ask(b, "Asked on replica B")
        reply = b.get_by_test_id("stChatMessage").nth(1)
        expect(reply).to_contain_text("openai-1")  # struck on B: the fallback answered
        b.screenshot(path=str(SHOTS / "fleet-1-b-chat.png"), full_page=True)
        assert not [r for r in first.chat_requests() if "Asked on replica B" in str(r.body)]  # never reached Claude

        b.goto(bases["B"] + "/status")
        picker = b.get_by_text("Replicas", exact=True)
        expect(picker).to_be_visible()
        expect(b.get_by_test_id("stMetric").first).to_have_text(re.compile(r"Requests\s*2$"))  # both replicas'
        b.screenshot(path=str(SHOTS / "fleet-2-b-status.png"), full_page=True)
        b.get_by_test_id("stMultiSelect").click()
        b.get_by_role("option", name="A", exact=True).click()
        b.keyboard.press("Escape")
        expect(b.get_by_test_id("stMetric").first).to_have_text(re.compile(r"Requests\s*1$"))  # A's alone
        b.screenshot(path=str(SHOTS / "fleet-3-b-status-a-only.png"), full_page=True)

        a.goto(bases["A"] + "/chaos")
        a.get_by_role("button", name="Reset everything").click()
        b.goto(bases["B"] + "/")
        expect(b.get_by_text("Simulated outage")).to_have_count(0)
        browser.close()
