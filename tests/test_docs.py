"""The README documents what the code does: every policy setting, every error kind, every tier."""

from __future__ import annotations

from core.config import POLICY_SCHEMA
from core.errors import ErrorKind
from core.tiers import Tier
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_documented_with_its_default():
    for section, keys in POLICY_SCHEMA.items():
        for key in keys:
            assert f"`[{section}] {key}`" in README, f"[{section}] {key} is not in the README"


def test_every_error_kind_and_tier_is_documented():
    assert all(f"`{k.value}`" in README for k in ErrorKind)
    assert all(f"`{t.value}`" in README for t in Tier)


def test_the_two_commands_are_there():
    assert "python3 -m pip install -r requirements.txt && python3 -m pytest" in README
    assert "python3 -m pip install -r requirements.txt && streamlit run app.py" in README
    assert (ROOT / ".ci" / "run").read_text().count("python3 -m pytest") == 1
