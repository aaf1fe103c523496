"""Chat: answers stream in; each one says who answered and how it got there."""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import streamlit as st

from core.answer import Answer, Delta, Restart
from core.attempt import Outcome
from core.messages import MAX_INPUT_CHARS, ChatRequest, Message, clean_text
from core.tiers import Tier
from pages.shared import banners, router, seconds

st.session_state.setdefault("messages", [])
st.session_state.setdefault("kept_input", None)
messages: list[dict] = st.session_state.messages

st.title("💬 Understudy")
banners()

# -- sidebar -----------------------------------------------------------------------------------------
with st.sidebar:
    st.subheader("Conversation")
    system = st.text_area("System prompt", key="system", value="You are a helpful, concise assistant.",
                          height=100)
    temperature = st.slider("Temperature", 0.0, 2.0, 0.7, 0.1, key="temperature",
                            help="Not sent to Anthropic models: their current API has no temperature.")
    max_tokens = st.number_input("Max tokens", 16, 32000, 1024, 64, key="max_tokens")
    left, right = st.columns(2)
    new_chat = left.button("New chat", key="new_chat", width="stretch", disabled=not messages)
    can_regenerate = bool(messages) and messages[-1]["role"] == "assistant"
    regenerate = right.button("Regenerate", key="regenerate", width="stretch", disabled=not can_regenerate)


def transcript_markdown() -> str:
    lines = ["# Understudy conversation", ""]
    if system.strip():
        lines += [f"*System prompt:* {system.strip()}", ""]
    for m in messages:
        who = "You" if m["role"] == "user" else "Assistant"
        meta = m.get("meta") or {}
        via = f" ({meta.get('provider') or meta.get('tier')}, {meta.get('model') or ''})".replace(", )", ")") \
            if m["role"] == "assistant" else ""
        lines += [f"**{who}{via}:**", "", m["content"], ""]
    return "\n".join(lines)


def transcript_json() -> str:
    return json.dumps({"system": system, "temperature": temperature, "max_tokens": int(max_tokens),
                       "messages": messages}, ensure_ascii=False, indent=2)


with st.sidebar:
    st.download_button("Download Markdown", transcript_markdown(), "understudy-chat.md", "text/markdown",
                       key="dl_md", width="stretch", disabled=not messages)
    st.download_button("Download JSON", transcript_json(), "understudy-chat.json", "application/json",
                       key="dl_json", width="stretch", disabled=not messages)

if new_chat:
    messages.clear()
    st.session_state.kept_input = None
    st.rerun()


# -- rendering ----------------------------------------------------------------------------------------
def badge(meta: dict) -> str:
    parts = []
    tier = Tier(meta.get("tier", "provider"))
    if tier.label:
        parts.append(f"**{tier.label}**")
    if meta.get("provider"):
        parts.append(f"**{meta['provider']}** · `{meta.get('model')}`")
    parts.append(f"{seconds(meta.get('elapsed_ms'))}")
    if meta.get("ttft_ms") is not None:
        parts.append(f"first token {seconds(meta['ttft_ms'])}")
    failed = [a for a in meta.get("attempts", []) if Outcome(a["outcome"]).failed]
    if failed:
        parts.append(f"↪ {len(failed)} failed/skipped")
    if any(a.get("hedge") for a in meta.get("attempts", [])):
        won = any(a.get("hedge") and a["outcome"] == "ok" for a in meta.get("attempts", []))
        parts.append("⚡ hedge won" if won else "⚡ hedged")
    if meta.get("switches"):
        parts.append(f"🔀 switched mid-answer ×{len(meta['switches'])}")
    if meta.get("stopped"):
        parts.append("⏹ stopped by you")
    elif not meta.get("complete", True) and tier is Tier.PROVIDER:
        parts.append("✂️ incomplete")
    return " · ".join(parts)


OUTCOME_ICON = {"ok": "✅", "error": "❌", "declined": "🚫", "cancelled": "⏹", "skipped": "⏭"}


def timeline(meta: dict) -> None:
    if meta.get("stopped"):
        st.caption(meta.get("notice", ""))
        return
    attempts = meta.get("attempts", [])
    label = f"How it got here — {len(attempts)} attempt{'s' if len(attempts) != 1 else ''}"
    with st.expander(label, expanded=False):
        if not attempts:
            st.caption("No provider was called: " + (meta.get("notice") or Tier(meta.get("tier", "provider")).label))
        if attempts:
            lines = ["| # | | provider | model | outcome | why | time | first token | detail |",
                     "|---|---|---|---|---|---|---|---|---|"]
            for i, a in enumerate(attempts, 1):
                outcome = a["outcome"] + (" (hedge)" if a.get("hedge") else "")
                detail = (a.get("detail") or "").replace("|", "/").replace("\n", " ")[:160]
                lines.append(f"| {i} | {OUTCOME_ICON.get(a['outcome'], '')} | {a['provider']} | `{a['model']}` | "
                             f"{outcome} | {a.get('error_kind') or ''} | {seconds(a['latency_ms'])} | "
                             f"{seconds(a['ttft_ms'])} | {detail} |")
            st.markdown("\n".join(lines))
        for sw in meta.get("switches", []):
            target = sw["provider"] or "no provider"
            st.caption(f"🔀 **{sw['failed']}** broke off mid-answer ({sw['reason']}); the partial text was "
                       f"replaced and **{target}** answered from the start.")
        if meta.get("notice"):
            st.caption(meta["notice"])


def show(message: dict) -> None:
    with st.chat_message(message["role"]):
        st.markdown(message["content"])
        if message["role"] == "assistant" and message.get("meta"):
            st.caption(badge(message["meta"]))
            timeline(message["meta"])


for message in messages:
    show(message)

if st.session_state.kept_input:
    st.warning(f"That message is {len(st.session_state.kept_input):,} characters; the limit is "
               f"{MAX_INPUT_CHARS:,}. It was not sent — here it is, so nothing is lost. Shorten it and send again.")
    st.text_area("Your message (not sent)", st.session_state.kept_input, key="kept_input_box", height=150)


# -- answering ----------------------------------------------------------------------------------------
def conversation() -> ChatRequest:
    # Only real model output goes back as context: declines, outage notices and stopped stubs don't.
    turns = [Message(m["role"], m["content"]) for m in messages
             if m["role"] == "user" or Tier((m.get("meta") or {}).get("tier", "provider")).model_output]
    return ChatRequest(messages=tuple(turns), system=clean_text(system), temperature=float(temperature),
                       max_tokens=int(max_tokens))


def answer(*, fresh: bool = False) -> None:
    request = conversation()
    with st.chat_message("assistant"):
        note, body = st.empty(), st.empty()
        body.markdown("⏳ *thinking…*")
        st.button("⏹ Stop", key=f"stop_{len(messages)}", help="Stop this answer; what arrived so far is kept.")
        reply, last_paint, started = Answer(), 0.0, time.monotonic()
        stream = router().stream(request, fresh=fresh)
        try:
            for event in stream:
                reply.add(event)
                if isinstance(event, Delta):
                    if time.monotonic() - last_paint > 0.05:  # repaint at most 20 times a second
                        body.markdown(reply.text + " ▌")
                        last_paint = time.monotonic()
                elif isinstance(event, Restart):
                    who = f"**{event.provider}** is answering from the start" if event.provider else "falling back"
                    note.info(f"🔀 **{event.failed}** broke off mid-answer ({event.reason}); {who}.")
                    body.markdown("⏳ *switching…*")
        finally:
            switches = [asdict(s) for s in reply.switches]
            if reply.result is None:
                # Interrupted: the Stop button, another message, or leaving the page. Keep what arrived.
                stream.close()
                messages.append({"role": "assistant", "content": reply.text or "*(stopped before any text arrived)*",
                                 "meta": {"tier": Tier.PROVIDER.value, "complete": False, "stopped": True,
                                          "switches": switches, "attempts": [],
                                          "elapsed_ms": (time.monotonic() - started) * 1000,
                                          "notice": "Stopped by you: the text above is what had arrived."}})
    meta = reply.result.as_dict()
    meta.pop("text")
    meta["switches"] = switches
    messages.append({"role": "assistant", "content": reply.result.text, "meta": meta})
    st.rerun()


prompt = st.chat_input("Ask anything…", key="prompt")
if prompt is not None:
    if not prompt.strip():
        st.toast("Type a message first.", icon="✍️")
    elif len(prompt) > MAX_INPUT_CHARS:
        st.session_state.kept_input = prompt
        st.rerun()
    else:
        st.session_state.kept_input = None
        message = {"role": "user", "content": clean_text(prompt)}
        messages.append(message)
        show(message)
        answer()
elif regenerate and can_regenerate:
    messages.pop()
    answer(fresh=True)
