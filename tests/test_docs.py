"""The README and docs/ document what the code does: every policy setting, every error kind, every
tier; and every link between them leads somewhere."""

from __future__ import annotations

import re

from core.config import POLICY_SCHEMA
from core.errors import ErrorKind
from core.tiers import Tier
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md"))}
ALL = "\n".join([README, *DOCS.values()])


def test_every_setting_is_documented_with_its_default():
    for section, keys in POLICY_SCHEMA.items():
        for key in keys:
            assert f"`[{section}] {key}`" in DOCS["configuration.md"], f"[{section}] {key} is not documented"


def test_every_error_kind_and_tier_is_documented():
    assert all(f"`{k.value}`" in DOCS["how-it-works.md"] for k in ErrorKind)
    assert all(f"`{t.value}`" in ALL for t in Tier)


def test_the_two_commands_are_there():
    assert "python3 -m pip install -r requirements.txt && python3 -m pytest" in README
    assert "python3 -m pip install -r requirements.txt && streamlit run app.py" in README
    assert (ROOT / ".ci" / "run").read_text().count("python3 -m pytest") == 1


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file():
    for name, text in [("README.md", README), *((f"docs/{n}", t) for n, t in DOCS.items())]:
        base = ROOT if name == "README.md" else ROOT / "docs"
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
            assert (base / target).exists(), f"{name} links to {target}, which does not exist"
