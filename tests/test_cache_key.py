"""The cache key keeps everything that can change a question's meaning: two questions that differ
in indentation or inner spacing (code!) must not share an answer; trailing whitespace may."""

from __future__ import annotations

from core.cache import cache_key
from core.messages import ChatRequest

FOUR = "Why does this fail?\n\nif x:\n    y = 1\n  z = 2\n"
TWO = "Why does this fail?\n\nif x:\n  y = 1\n  z = 2\n"


def key(text: str, **kw) -> str:
    return cache_key(ChatRequest.ask(text, **kw))


def test_indentation_and_inner_spacing_are_part_of_the_question():
    assert key(FOUR) != key(TWO)
    assert key("a\tb") != key("a b")
    assert key("| a  | b |") != key("| a | b |")
    assert key("line one\nline two") != key("line one line two")
    assert key("    indented first line") != key("indented first line")
    assert key("q", system="Answer  in\n  two parts") != key("q", system="Answer in two parts")


def test_only_what_cannot_change_the_meaning_is_normalised():
    assert key(FOUR) == key(FOUR.replace("\n", "   \n") + "\n\n")  # trailing spaces, trailing blank lines
    assert key(FOUR) == key(FOUR.replace("\n", "\r\n"))  # Windows line endings
    assert key("\n\nWhat is a hedge?") == key("What is a hedge?")  # blank lines before it
    assert key("Café") == key("Cafe\u0301")  # the same characters, composed or not


def test_differently_indented_code_gets_its_own_answer(chain):
    router, (server,) = chain("openai")
    four = router.ask(ChatRequest.ask(FOUR))
    two = router.ask(ChatRequest.ask(TWO))
    assert four.tier == two.tier == "provider" and four.text != two.text
    assert len(server.chat_requests()) == 2
    again = router.ask(ChatRequest.ask(FOUR.rstrip() + "  \n"))
    assert again.tier == "cache" and again.text == four.text
