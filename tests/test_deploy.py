"""The deploy kit (deploy/): its files pass deploy/check's static checks on every run, the checks
catch what they are for, and where nginx is installed the fleet runs for real behind it (two
`streamlit run app.py` replicas on real Redis and PostgreSQL; about 15 s)."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import sys
from importlib.machinery import SourceFileLoader

import pytest

from tests.conftest import ROOT, service_missing

_loader = SourceFileLoader("deploy_check", str(ROOT / "deploy" / "check"))
check = importlib.util.module_from_spec(importlib.util.spec_from_loader("deploy_check", _loader))
sys.modules["deploy_check"] = check  # its dataclasses look their module up by name
_loader.exec_module(check)

NGINX = (ROOT / "deploy" / "nginx.conf").read_text(encoding="utf-8")
SCALING = (ROOT / "docs" / "scaling-out.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_compose_dockerfile_and_nginx_pass_the_static_checks():
    check.check_compose(check.load_compose())
    check.check_dockerfile()
    check.check_nginx()


def test_every_provider_variable_is_passed_through_to_both_replicas():
    services = check.load_compose()["services"]
    for app in check.APPS:
        env = services[app]["environment"]
        assert {name: env[name] for name in check.provider_variables()} == \
               {name: f"${{{name}:-}}" for name in check.provider_variables()}


@pytest.mark.parametrize("breakage, complaint", [
    (lambda d: d["services"]["app-1"]["environment"].update(OPENAI_API_KEY="sk-literal"), "OPENAI_API_KEY"),
    (lambda d: d["services"]["app-2"]["environment"].pop("UNDERSTUDY_REDIS_URL"), "UNDERSTUDY_REDIS_URL"),
    (lambda d: d["services"]["app-2"]["environment"].update(UNDERSTUDY_REPLICA="app-1"), "share"),
    (lambda d: d["services"]["redis"].update(ports=["6379:6379"]), "redis publishes a port"),
    (lambda d: d["services"]["app-1"]["depends_on"].pop("postgres"), "healthy"),
    (lambda d: d["services"]["postgres"].pop("healthcheck"), "postgres has no healthcheck"),
])
def test_the_compose_check_catches_a_broken_fleet(breakage, complaint):
    data = copy.deepcopy(check.load_compose())
    breakage(data)
    with pytest.raises(check.CheckFailed, match=complaint):
        check.check_compose(data)


@pytest.mark.parametrize("old, new, complaint", [
    ("hash $understudy_affinity consistent;", "", "not sticky"),
    ("hash $understudy_affinity consistent;", "hash $request_uri consistent;", "not a cookie"),
    ("            proxy_set_header Upgrade $http_upgrade;\n", "", "Upgrade"),
    ("            proxy_http_version 1.1;\n", "", "1.1"),
    ("            proxy_read_timeout 3600s;\n", "            proxy_read_timeout 60s;\n", "proxy_read_timeout"),
    ("            proxy_set_header Host $host;\n            proxy_set_header X-Real-IP", "            proxy_set_header X-Real-IP",
     "Host"),
    ("location = /healthz {", "location = /health {", "/healthz"),
    ("        proxy_set_header X-Forwarded-Proto $scheme;\n", "", "X-Forwarded-Proto"),  # the server block's
])
def test_the_nginx_check_catches_a_broken_proxy(old, new, complaint):
    assert old in NGINX
    with pytest.raises(check.CheckFailed, match=complaint):
        check.check_nginx(NGINX.replace(old, new, 1))


def test_ip_hash_is_sticky_too():
    check.check_nginx(NGINX.replace("hash $understudy_affinity consistent;", "ip_hash;", 1))


def test_the_docs_say_how_to_scale_out_and_the_readme_points_there():
    assert "docker compose -f deploy/compose.yaml up --build" in SCALING
    assert "deploy/check --live" in SCALING
    assert "(docs/scaling-out.md)" in README


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed (apt-get install nginx-light): "
                    "nginx -t and the live fleet behind it are not run")
def test_nginx_accepts_the_config():
    report = check.Report()
    check.run_tools(report)
    lines = [line for line in report.lines if line[1].startswith("nginx -t")]
    assert lines and lines[0][0] == "ok", report.text()


@pytest.mark.timeout(240)
@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is not installed (apt-get install nginx-light): "
                    "the live fleet behind it is not run")
def test_two_replicas_behind_nginx_serve_one_browser_from_one_replica():
    report = check.Report()
    check.live(report)
    for status, what, detail in report.lines:
        if status == "not run":
            service_missing(f"{what}: {detail}")
    assert report.ok, report.text()
    assert [what for _, what, _ in report.lines] == [
        "live fleet starts", "live: the image's HEALTHCHECK command", "live: GET /healthz through nginx",
        "live: GET / through nginx", "live: sticky sessions", "live: WebSocket /_stcore/stream through nginx",
        "live: a replica stops"]
