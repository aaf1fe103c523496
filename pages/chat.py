"""Chat: answers stream in; each one says who answered and how it got there.

Every conversation is kept (core/store/conversations.py): its id is in the URL (`?c=`), so a
reload, a restart or a bookmark brings it back exactly. Saving happens off this thread
(core/saving.py): the user's message when it is sent, the answer when it is complete; if the
database is down the messages stay in this tab and are saved when it is back.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from dataclasses import asdict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from core import attachments as files
from core.answer import Answer, Delta, Restart
from core.attempt import Outcome
from core.browser import COOKIE, owner_for
from core.markdown import as_typed, code, literal, without_images
from core.messages import MAX_INPUT_CHARS, ChatRequest, Message, clean_text
from core.store import StoreError
from core.story import story
from core.store.conversations import (BadConversationId, Conversation, Summary, label_for, new_id, parse_id,
                                      title_for)
from core.tiers import Origin, Tier
from core.transcript import (DEFAULT_SETTINGS, MAX_IMPORT_BYTES, MAX_TOKENS_RANGE, TEMPERATURE_RANGE, BadImport,
                             conversation_from_export, to_json, to_markdown)
from pages.shared import banners, router, runtime, seconds

NOT_SAVED = ("History is temporarily not being saved — your messages are kept in this tab and will be saved "
             "when the database is back.")
SETTINGS = ("system", "temperature", "max_tokens")

store, saver = runtime().conversations, runtime().saver


def me() -> tuple[str, str]:
    """(owner, who): the logged-in user, else this browser's cookie, else (no cookie) this tab alone."""
    found = owner_for(st.user.to_dict(), st.context.cookies.get(COOKIE))
    if found is not None:
        return found
    tab = st.session_state.setdefault("tab_owner", "tab:" + secrets.token_hex(16))
    return tab, tab


def reader_zone() -> ZoneInfo | None:
    """The reader's time zone as their browser reports it (for the Markdown download); None: UTC."""
    try:
        return ZoneInfo(st.context.timezone) if st.context.timezone else None
    except (ZoneInfoNotFoundError, ValueError):
        return None


owner, who = me()
# This session as a writer of conversations: two tabs on one conversation are two writers, so neither
# can write over turns it never saw (core/store/conversations.py).
st.session_state.setdefault("writer", secrets.token_hex(16))


# -- which conversation: the URL says -------------------------------------------------------------
def start_new() -> None:
    st.session_state.conv = {"id": None, "owner": owner, "created_at": None, "version": 0}
    st.session_state.moved_notice = None
    st.session_state.messages = []
    st.session_state.kept_input = None
    st.session_state.settings = dict(DEFAULT_SETTINGS)
    for key in SETTINGS:
        st.session_state[key] = DEFAULT_SETTINGS[key]


def show_conversation(c: Conversation) -> None:
    st.session_state.conv = {"id": c.id, "owner": c.owner, "created_at": c.created_at, "version": c.version}
    st.session_state.moved_notice = None
    st.session_state.messages = list(c.messages)
    st.session_state.kept_input = None
    settings = {**DEFAULT_SETTINGS, **{k: v for k, v in c.settings.items() if k in SETTINGS}}
    settings.update(temperature=float(settings["temperature"]), max_tokens=int(settings["max_tokens"]))
    st.session_state.settings = settings
    for key in SETTINGS:
        st.session_state[key] = settings[key]
    st.query_params["c"] = c.id


def open_link(raw: str) -> None:
    """Show the conversation the URL names; say plainly why not when it can't be."""
    try:
        cid = parse_id(raw)
    except BadConversationId as e:
        st.session_state.link_problem = str(e)
        start_new()
        st.query_params.pop("c", None)
        return
    waiting = saver.pending(cid)  # written yet or not: this process's newest copy wins
    try:
        stored = store.load(cid)
    except StoreError:
        stored = None
        if waiting is None:
            st.session_state.link_problem = ("This conversation can't be opened right now: the database is not "
                                             "answering. Reload the page in a moment.")
            start_new()
            st.session_state.conv_retry = raw  # try again on the next rerun
            return
    # This process's unwritten snapshot is the newest copy unless another writer has saved since.
    # This page shows it as a reader: it stays that snapshot's writer's, so if this page carries on
    # too, its save builds on the version that snapshot did and forks rather than write over it.
    newest = waiting is not None and (stored is None or stored.writer == waiting.writer
                                      or stored.version <= waiting.version)
    found = waiting if newest else stored
    if found is None:
        st.session_state.link_problem = ("There is no conversation with that id: it may have been deleted, or "
                                         "the link is incomplete.")
        start_new()
        st.query_params.pop("c", None)
        return
    show_conversation(found)


def follow_moves() -> None:
    """The writer could not save this session's last snapshot where it was meant to go: say so."""
    moved = saver.moved(st.session_state.conv["id"], st.session_state.writer) if st.session_state.conv["id"] else None
    if moved is None:
        return
    if moved.kind == "refused":
        notice = ("This conversation could not be saved: the database refused its content "
                  f"({literal(moved.why)}). Everything is still on this page: use **Download JSON** to keep it.")
    elif moved.kind == "forked":
        st.session_state.conv.update(id=moved.to, owner=owner, version=0)
        st.query_params["c"] = moved.to
        notice = (
            "This conversation was changed in another tab or browser while it was open here. Nothing is "
            f"lost: what you see here is kept as a new conversation, “{literal(moved.title)}”, and the other "
            "version is in your list as it was left.")
    else:
        st.session_state.conv.update(id=None, created_at=None, version=0)
        st.query_params.pop("c", None)
        notice = ("This conversation was deleted in another tab or browser. What you see is still on this page: "
                  "send a message to keep it as a new conversation, or start a new chat.")
    # Shown through the next question and its answer, so a message sent meanwhile can't hide it.
    st.session_state.moved_notice = (notice, len(st.session_state.messages) + 2)


if "conv" not in st.session_state:
    start_new()
follow_moves()
link = st.query_params.get("c")
current = st.session_state.conv["id"]
retry = st.session_state.pop("conv_retry", None)  # a link the database could not open last time
if link is not None and (link != current or retry == link):
    open_link(link)
elif link is None and current is not None:
    st.query_params["c"] = current  # back from another page: the URL names this conversation again
for key in SETTINGS:  # a widget's value is forgotten while another page shows; the conversation keeps it
    if key not in st.session_state:
        st.session_state[key] = st.session_state.settings[key]

messages: list[dict] = st.session_state.messages
conv: dict = st.session_state.conv
mine = conv["owner"] == owner


def snapshot() -> Conversation:
    return Conversation(id=conv["id"], owner=owner, created_at=conv["created_at"], updated_at=time.time(),
                        messages=list(messages), settings=dict(st.session_state.settings),
                        version=conv["version"], writer=st.session_state.writer)


def save() -> None:
    """Hand the conversation to the writer (never waits for the database)."""
    if conv["id"] is not None and mine and messages:
        saver.submit(snapshot())


def make_mine() -> None:
    """Before the first message, or when continuing someone else's conversation: a new id of ours."""
    global mine
    if conv["id"] is not None and mine:
        return
    conv.update(id=new_id(), owner=owner, created_at=time.time(), version=0)
    mine = True
    st.query_params["c"] = conv["id"]


st.title("💬 Understudy")
banners()
if problem := st.session_state.pop("link_problem", None):
    st.error(problem, icon="🔗")
if (notice := st.session_state.get("moved_notice")) and len(messages) <= notice[1]:
    st.warning(notice[0], icon="🔀")
if conv["id"] is not None and not mine:
    st.info("This conversation was shared with you by its link. It stays as its owner left it: if you carry on, "
            "your messages go into a copy of your own.", icon="🔗")

# -- sidebar -----------------------------------------------------------------------------------------
with st.sidebar:
    st.subheader("Conversation")
    if conv["id"] is not None:  # the name the Follow-ups page knows it by (never the id: that opens it)
        st.caption(f"Conversation {label_for(conv['id'])} — quote this to support")
    system = st.text_area("System prompt", key="system", height=100)
    temperature = st.slider("Temperature", *TEMPERATURE_RANGE, step=0.1, key="temperature",
                            help="Not sent to Anthropic models: their current API has no temperature.")
    max_tokens = st.number_input("Max tokens", *MAX_TOKENS_RANGE, step=64, key="max_tokens")
    skip_cache = st.toggle("Skip the cache", key="skip_cache",
                           help="Ask the providers every time, even for a question answered a moment ago: for "
                                "demos, so a repeated question shows the failover rather than a cached answer. "
                                "This tab only; answers still refresh the cache for everyone else.")
    chosen = {"system": system, "temperature": float(temperature), "max_tokens": int(max_tokens)}
    if chosen != st.session_state.settings:
        st.session_state.settings = chosen
        save()
    left, right = st.columns(2)
    new_chat = left.button("New chat", key="new_chat", width="stretch", disabled=not messages,
                           on_click=lambda: (start_new(), st.query_params.pop("c", None)))
    can_regenerate = bool(messages) and messages[-1]["role"] == "assistant"
    regenerate = right.button("Regenerate", key="regenerate", width="stretch", disabled=not can_regenerate)

def recent(search: str) -> list[Summary] | None:
    """This owner's conversations, newest first; None when the database can't say."""
    try:
        items = store.list(owner, search=search, limit=30)
    except StoreError:
        return None
    waiting = saver.pending(conv["id"]) if conv["id"] else None
    if waiting is not None and mine and not search.strip() and all(i.id != waiting.id for i in items):
        # Not written yet (the writer is at it, or the database is down): it is still ours to show.
        items.insert(0, Summary(waiting.id, title_for(waiting.messages), waiting.created_at, waiting.updated_at,
                                len(waiting.messages)))
    return items


def open_conversation(cid: str) -> None:
    st.query_params["c"] = cid  # the next run opens it, the way a link does


def delete_conversation(cid: str) -> None:
    try:
        store.delete(cid, owner=owner)
    except StoreError:
        st.session_state.list_problem = "That conversation could not be deleted: the database is not answering."
        return
    saver.discard(cid)
    st.session_state.confirm_delete = None
    if cid == conv["id"]:
        start_new()
        st.query_params.pop("c", None)


with st.sidebar:
    st.subheader("Your conversations")
    user = st.user.to_dict()
    if user.get("is_logged_in"):
        st.caption(f"Signed in as **{who}**: your conversations follow you to any browser.")
        st.button("Log out", key="logout", on_click=st.logout)
    elif "is_logged_in" in user:  # login is configured ([auth] in secrets.toml), nobody is logged in
        st.caption("Listed for this browser only. Log in to find them on any device.")
        st.button("Log in", key="login", on_click=st.login)
    search = st.text_input("Search", key="conv_search", placeholder="Search titles and messages",
                           label_visibility="collapsed")
    items = recent(search)
    if problem := st.session_state.pop("list_problem", None):
        st.error(problem)
    if items is None:
        st.caption("Your conversations can't be listed right now: the database is not answering.")
    elif not items:
        st.caption("No conversation matches." if search.strip() else "Nothing yet: your conversations will be "
                   "listed here.")
    confirm = st.session_state.get("confirm_delete")
    for item in items or []:
        if confirm == item.id:
            st.warning(f"Delete “{literal(item.title or 'New chat')}”? This can't be undone.")
            yes, no = st.columns(2)
            yes.button("Delete", key="confirm_delete_yes", type="primary", width="stretch",
                       on_click=delete_conversation, args=(item.id,))
            no.button("Cancel", key="confirm_delete_no", width="stretch",
                      on_click=st.session_state.__setitem__, args=("confirm_delete", None))
            continue
        name, more = st.columns([3, 1], vertical_alignment="center")
        name.button(literal(item.title or "New chat"), key=f"open_{item.id}", width="stretch",
                    type="primary" if item.id == conv["id"] else "secondary",
                    help=f"{item.message_count} messages · last {time.strftime('%Y-%m-%d %H:%M', time.localtime(item.updated_at))}",
                    on_click=open_conversation, args=(item.id,))
        with more.popover("", icon=":material/more_horiz:", help="Rename or delete"):
            title = st.text_input("Title", item.title, key=f"title_{item.id}", max_chars=200)
            if st.button("Rename", key=f"rename_{item.id}", width="stretch"):
                try:
                    store.rename(item.id, owner=owner, title=title)
                except StoreError:
                    st.session_state.list_problem = "That conversation could not be renamed: the database is not answering."
                st.rerun()
            st.button("Delete…", key=f"delete_{item.id}", width="stretch",
                      on_click=st.session_state.__setitem__, args=("confirm_delete", item.id))

    st.subheader("Export and import")
    title_now = title_for(messages) or "Understudy conversation"
    name_now = f"understudy-{conv['id'][:8]}" if conv["id"] else "understudy-chat"
    settings_now = st.session_state.settings
    st.download_button("Download Markdown", to_markdown(messages, settings_now, id=conv["id"] or "", title=title_now,
                                                        tz=reader_zone()),
                       f"{name_now}.md", "text/markdown", key="dl_md", width="stretch", disabled=not messages)
    st.download_button("Download JSON", to_json(messages, settings_now, id=conv["id"] or "", title=title_now,
                                                created_at=conv["created_at"], updated_at=time.time(),
                                                exported_at=time.time()),
                       f"{name_now}.json", "application/json", key="dl_json", width="stretch", disabled=not messages)
    upload = st.file_uploader("Import a JSON export", type=["json"], key="import_file",
                              help="A file from “Download JSON”: it opens as a new conversation of yours.")
    if upload is not None and upload.file_id != st.session_state.get("imported_file"):
        st.session_state.imported_file = upload.file_id  # each upload is imported once
        try:
            if upload.size > MAX_IMPORT_BYTES:
                raise BadImport(f"The file is {upload.size:,} bytes; the limit is {MAX_IMPORT_BYTES:,}.")
            imported = conversation_from_export(upload.getvalue(), owner=owner, now=time.time()).with_(
                writer=st.session_state.writer)
        except BadImport as e:
            st.session_state.import_problem = f"“{literal(upload.name)}” can't be imported: {e}"
        else:
            saver.submit(imported)
            st.query_params["c"] = imported.id  # the next run opens it (from the writer if not written yet)
            st.session_state.import_done = f"Imported “{literal(imported.shown_title)}” as a new conversation."
        st.rerun()
    if problem := st.session_state.pop("import_problem", None):
        st.error(problem)
    if done := st.session_state.pop("import_done", None):
        st.success(done)


# -- rendering ----------------------------------------------------------------------------------------
# What a message's meta holds may come from an imported file: every value drawn in Markdown goes
# through core.markdown (`literal` or `code`), and message text through `without_images`.
def badge(meta: dict) -> str:
    parts = []
    tier = Tier(meta.get("tier", "provider"))
    if tier.label:
        parts.append(f"**{tier.label}**")
    if meta.get("provider"):
        parts.append(f"**{literal(meta['provider'])}** · {code(meta.get('model') or '–')}")
    parts.append(f"{seconds(meta.get('elapsed_ms'))}")
    if meta.get("ttft_ms") is not None:
        parts.append(f"first token {seconds(meta['ttft_ms'])}")
    failed = [a for a in meta.get("attempts", []) if Outcome(a["outcome"]).failed]
    if failed:
        parts.append(f"↪ {len(failed)} failed/skipped")
    attempts = meta.get("attempts", [])
    if any(a.get("hedge") and not a.get("stall") for a in attempts):
        won = any(a.get("hedge") and not a.get("stall") and a["outcome"] == "ok" for a in attempts)
        parts.append("⚡ hedge won" if won else "⚡ hedged")
    if any(a.get("stall") for a in attempts):
        took_over = any(a.get("stall") and a["outcome"] == "ok" for a in attempts)
        parts.append("⏸ stalled, its backup took over" if took_over else "⏸ stalled, then went on")
    if meta.get("switches"):
        parts.append(f"🔀 switched mid-answer ×{len(meta['switches'])}")
    if meta.get("stopped"):
        parts.append("⏹ stopped by you")
    elif not meta.get("complete", True) and tier is Tier.PROVIDER:
        parts.append("✂️ incomplete")
    return " · ".join(parts)


OUTCOME_ICON = {"ok": "✅", "error": "❌", "declined": "🚫", "cancelled": "⏹", "skipped": "⏭"}


def timeline(meta: dict) -> None:
    if meta.get("stopped"):  # the story line and the badge say so already; a switch before the Stop is news
        for sw in meta.get("switches", []):
            st.caption(f"🔀 **{literal(sw['failed'])}** broke off mid-answer ({literal(sw['reason'])}) before you "
                       f"stopped it; the words shown are **{literal(sw['provider'] or 'no provider')}**'s.")
        return
    attempts = meta.get("attempts", [])
    label = f"How it got here — {len(attempts)} attempt{'s' if len(attempts) != 1 else ''}"
    with st.expander(label, expanded=False):
        if not attempts:
            st.caption("No provider was called: " + literal(meta.get("notice") or Tier(meta.get("tier", "provider")).label))
        if attempts:
            lines = ["| # | | provider | model | outcome | why | time | first token | detail |",
                     "|---|---|---|---|---|---|---|---|---|"]
            for i, a in enumerate(attempts, 1):
                outcome = a["outcome"] + (" (hedge)" if a.get("hedge") else "")
                # literal() keeps a cell one cell: its `|` escaped, its line breaks spaces
                lines.append(f"| {i} | {OUTCOME_ICON.get(a['outcome'], '')} | {literal(a['provider'])} | "
                             f"{literal(a['model'])} | {literal(outcome)} | {literal(a.get('error_kind') or '')} | "
                             f"{seconds(a['latency_ms'])} | {seconds(a['ttft_ms'])} | "
                             f"{literal((a.get('detail') or '')[:160])} |")
            st.markdown("\n".join(lines))
        for sw in meta.get("switches", []):
            target = literal(sw["provider"] or "no provider")
            st.caption(f"🔀 **{literal(sw['failed'])}** broke off mid-answer ({literal(sw['reason'])}); the partial "
                       f"text was replaced and **{target}** answered from the start.")
        if meta.get("notice"):
            st.caption(literal(meta["notice"]))


PREVIEW_LINES, PREVIEW_CHARS = 25, 2500  # a longer message of the user's is collapsed: its start, then "show all"
# Every paragraph of an answer takes its direction from its own text, as dir="auto" would: Arabic or
# Hebrew reads right to left, English beside it left to right. The paste guard below has nothing to show.
st.html("<style>[data-testid='stChatMessageContent'] :is(p, li, h1, h2, h3, h4, blockquote, td, th) "
        "{unicode-bidi: plaintext; text-align: start} .st-key-paste_guard {display: none}</style>")

# Two tiny components (Streamlit has no copy button of its own but st.code's). Their code is ours
# and fixed; a message reaches them only as `data`, which they put in the page as text
# (textContent, the clipboard), never as HTML, so nothing in a message can run or load anything.
_ACTIONS_HTML = (
    '<div class="row"><button type="button" class="copy" aria-label="Copy message" title="Copy">'
    '<svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true"><rect x="9" y="9" width="11" height="11" '
    'rx="2" fill="none" stroke="currentColor" stroke-width="2"/><path d="M5 15V5a2 2 0 0 1 2-2h8" fill="none" '
    'stroke="currentColor" stroke-width="2"/></svg><span class="label">Copy</span></button>'
    '<time class="at"></time><span class="status" role="status" aria-live="polite"></span></div>')
_ACTIONS_CSS = """
.row { display: flex; align-items: center; gap: 0.6rem; font-family: var(--st-font, inherit);
       font-size: 0.8rem; color: var(--st-text-color, inherit); }
.copy { display: inline-flex; align-items: center; gap: 0.25rem; padding: 0.1rem 0.4rem; cursor: pointer;
        color: inherit; opacity: 0.65; background: transparent; border: 1px solid transparent;
        border-radius: 0.4rem; font: inherit; }
.copy:hover, .copy:focus-visible { opacity: 1; border-color: var(--st-border-color, #ccc); }
.at { opacity: 0.65; }
.status { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%); }  /* for screen readers */
"""
_ACTIONS_JS = """
export default function ({ data, parentElement }) {
  const copy = parentElement.querySelector(".copy"), label = parentElement.querySelector(".label");
  const at = parentElement.querySelector(".at"), status = parentElement.querySelector(".status");
  const text = String((data && data.text) || "");
  if (data && typeof data.at === "number") {
    const d = new Date(data.at * 1000), now = new Date();
    const day = d.toDateString() === now.toDateString() ? {}
      : d.getFullYear() === now.getFullYear() ? { month: "short", day: "numeric" }
      : { year: "numeric", month: "short", day: "numeric" };
    at.textContent = d.toLocaleString(undefined, { ...day, hour: "2-digit", minute: "2-digit" });
    at.dateTime = d.toISOString();
    at.title = d.toLocaleString(undefined, { dateStyle: "full", timeStyle: "long" });
  } else {
    at.textContent = "";
  }
  const said = (word) => {
    label.textContent = word;
    status.textContent = word === "Copy" ? "" : word;
    clearTimeout(copy._reset);
    copy._reset = setTimeout(() => { label.textContent = "Copy"; status.textContent = ""; }, 2000);
  };
  const fallback = () => {  // no Clipboard API (plain http on another host): a selection and execCommand
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.cssText = "position:fixed;opacity:0;pointer-events:none";
    document.body.appendChild(area);
    area.select();
    const done = document.execCommand("copy");
    area.remove();
    return done;
  };
  copy.onclick = async () => {
    try {
      if (!navigator.clipboard) throw new Error("no clipboard");
      await navigator.clipboard.writeText(text);
      said("Copied");
    } catch (e) {
      said(fallback() ? "Copied" : "Couldn't copy: select the text and press Ctrl+C");
    }
  };
}
"""
message_actions = st.components.v2.component("understudy_message_actions", html=_ACTIONS_HTML, css=_ACTIONS_CSS,
                                             js=_ACTIONS_JS)

# Chromium inserts text that arrives as one "insertText" input (Playwright's fill, some IMEs and
# clipboard tools; not Ctrl+V) a line at a time, in time that grows with the square of the lines:
# 5,000 lines took over a minute, in a bare <textarea> as much as in this page. For a long
# multi-line insert this puts the text in the box at once instead (and tells React, which owns
# the box's value); everything else, a real paste included, is left to the browser.
_PASTE_GUARD_JS = r"""
export default function () {
  const LINES = 100;
  const setValue = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, "value").set;
  const guard = (e) => {
    const box = e.target;
    if (!e.cancelable || typeof e.data !== "string" || !(box instanceof HTMLTextAreaElement)
        || box.dataset.testid !== "stChatInputTextArea"
        || (e.inputType !== "insertText" && e.inputType !== "insertReplacementText")) return;
    let lines = 0;
    for (let i = e.data.indexOf("\n"); i !== -1 && lines < LINES; i = e.data.indexOf("\n", i + 1)) lines++;
    if (lines < LINES) return;
    e.preventDefault();
    const start = box.selectionStart, end = box.selectionEnd;
    setValue.call(box, box.value.slice(0, start) + e.data + box.value.slice(end));
    box.selectionStart = box.selectionEnd = start + e.data.length;
    box.dispatchEvent(new Event("input", { bubbles: true }));
  };
  if (window.__understudyPasteGuard) document.removeEventListener("beforeinput", window.__understudyPasteGuard, true);
  window.__understudyPasteGuard = guard;
  document.addEventListener("beforeinput", guard, true);
  return () => {
    document.removeEventListener("beforeinput", guard, true);
    if (window.__understudyPasteGuard === guard) window.__understudyPasteGuard = null;
  };
}
"""
paste_guard = st.components.v2.component("understudy_paste_guard", js=_PASTE_GUARD_JS)
paste_guard(key="paste_guard")


def user_text(text: str) -> None:
    """What the user typed, exactly: no Markdown (a log stays a log), line breaks kept."""
    lines = text.count("\n") + 1
    if lines <= PREVIEW_LINES and len(text) <= PREVIEW_CHARS:
        st.html(as_typed(text))
        return
    head = "\n".join(text.split("\n", PREVIEW_LINES)[:PREVIEW_LINES])[:PREVIEW_CHARS]
    st.html(as_typed(head + " …"))
    with st.expander(f"Show all — {lines:,} lines, {len(text):,} characters"):
        st.html(as_typed(text))


def attached(a: dict) -> None:
    """An attached file: its name, size and length, its text collapsed (st.code: as it is, with a copy button)."""
    text = a["text"]
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    with st.expander(f"📎 {literal(a['name'])} · {files.human_size(a['size'])} · {lines:,} line{'s' if lines != 1 else ''}"):
        st.code(text, language="text", wrap_lines=True)


def show(message: dict, i: int | None = None) -> None:
    """One message; `i` (its place in the conversation) gives it its copy button and time."""
    with st.chat_message(message["role"]):
        if message["role"] == "user":
            if message["content"]:
                user_text(message["content"])
            for a in files.stored(message.get("attachments")):
                attached(a)
        else:
            st.markdown(without_images(message["content"]))  # a remote image would be fetched on sight
        if message["role"] == "assistant" and message.get("meta"):
            if line := story(message["meta"]):  # the failover in one plain line; the badge has the details
                st.markdown(f"{'⏹️' if message['meta'].get('stopped') else '↪️'} {literal(line)}")
            st.caption(badge(message["meta"]))
            timeline(message["meta"])
        if i is not None:
            # What Copy takes: the message as written (an answer's Markdown; a user's typed text, or
            # their files' text when they only attached files).
            text = message["content"] or files.compose("", files.stored(message.get("attachments")))
            at = message.get("at")
            message_actions(key=f"actions_{i}",
                            data={"text": text, "at": at if isinstance(at, (int, float)) else None})


for i, message in enumerate(messages):
    show(message, i)

if conv["id"] is not None and saver.failing(conv["id"]) is not None:
    st.warning(NOT_SAVED, icon="💾")
    saver.nudge()  # this rerun is a good moment to try again


if st.session_state.kept_input:
    st.warning(f"That message is {len(st.session_state.kept_input):,} characters; the limit is "
               f"{MAX_INPUT_CHARS:,}. It was not sent — here it is, so nothing is lost. Shorten it and send again.")
    st.text_area("Your message (not sent)", st.session_state.kept_input, key="kept_input_box", height=150)


# -- answering ----------------------------------------------------------------------------------------
def conversation() -> ChatRequest:
    # Only real model output goes back as context: declines, outage notices and stopped stubs don't.
    turns = [Message(m["role"], files.compose(m["content"], files.stored(m.get("attachments"))))
             for m in messages
             if m["role"] == "user" or Tier((m.get("meta") or {}).get("tier", "provider")).model_output]
    return ChatRequest(messages=tuple(turns), system=clean_text(system), temperature=float(temperature),
                       max_tokens=int(max_tokens))


_END = object()


def _promptly(stream, tick, every: float = 0.2):
    """The stream's (event, whose words) pairs, read on a helper thread, so this script thread is never blocked on a
    silent provider: while nothing arrives it calls `tick()` (a repaint) every `every` seconds,
    which is where Streamlit delivers a Stop press or a new message to this thread at once."""
    events: queue.SimpleQueue = queue.SimpleQueue()

    def read() -> None:
        try:
            for event in stream:
                # Whose words a Delta is, asked while the router waits at that very event: the page
                # lags the router, which may have moved on (switched, given up) by the time it reads it.
                events.put((event, stream.answering))
        finally:
            events.put(_END)

    threading.Thread(target=read, name="understudy-answer-reader", daemon=True).start()
    while True:
        try:
            event = events.get(timeout=every)
        except queue.Empty:
            tick()
            continue
        if event is _END:
            return
        yield event


def answer(*, fresh: bool = False) -> None:
    request = conversation()
    with st.chat_message("assistant"):
        note, body = st.empty(), st.empty()
        body.markdown("⏳ *thinking…*")
        st.button("⏹ Stop", key=f"stop_{len(messages)}", help="Stop this answer; what arrived so far is kept.")
        reply, last_paint, started, shown_by = Answer(), 0.0, time.monotonic(), None
        stream = router().stream(request, fresh=fresh or skip_cache, origin=Origin(conv["id"] or "", who))
        try:
            for event, source in _promptly(stream, lambda: body.markdown(
                    without_images(reply.text) + " ▌" if reply.text else "⏳ *thinking…*")):
                reply.add(event)
                if isinstance(event, Delta):
                    shown_by = source
                    if time.monotonic() - last_paint > 0.05:  # repaint at most 20 times a second
                        body.markdown(without_images(reply.text) + " ▌")
                        last_paint = time.monotonic()
                elif isinstance(event, Restart):
                    shown_by = None
                    who_now = f"**{literal(event.provider)}** is answering from the start" if event.provider \
                        else "falling back"
                    note.info(f"🔀 **{literal(event.failed)}** broke off mid-answer ({literal(event.reason)}); {who_now}.")
                    body.markdown("⏳ *switching…*")
        finally:
            switches = [asdict(s) for s in reply.switches]
            if reply.result is None:
                # Interrupted: the Stop button, another message, or leaving the page. Keep what arrived.
                stream.stop()  # from this thread while a reader may be blocked on a silent provider
                source = shown_by if reply.text else None  # whose words these are (those on the page)
                messages.append({"role": "assistant", "content": reply.text or "*(stopped before any text arrived)*",
                                 "at": time.time(),
                                 "meta": {"tier": Tier.PROVIDER.value, "complete": False, "stopped": True,
                                          "provider": source[0] if source else None,
                                          "model": source[1] if source else None,
                                          "switches": switches, "attempts": [],
                                          "elapsed_ms": (time.monotonic() - started) * 1000,
                                          "notice": "Stopped by you: the text above is what had arrived."}})
                save()
    meta = reply.result.as_dict()
    meta.pop("text")
    meta["switches"] = switches
    messages.append({"role": "assistant", "content": reply.result.text, "meta": meta, "at": time.time()})
    save()  # the answer is complete: now, not per chunk
    st.rerun()


if problems := st.session_state.pop("attach_problems", None):
    st.error("\n\n".join(literal(p) for p in problems) + "\n\n**Nothing was sent.** What you typed is back in the "
             "box; attach the files again (text files, in all at most "
             f"{MAX_INPUT_CHARS:,} characters) and send.", icon="📎")
if (back := st.session_state.pop("restore_prompt", None)) is not None:
    st.session_state.prompt = back  # a refused message's text goes back into the box (before the box is drawn)


def attachments_of(uploads) -> tuple[list[dict], list[str]]:
    """The files' text, and a sentence for each that can't be attached (or for the whole, when too long)."""
    good, problems = [], []
    if len(uploads) > files.MAX_FILES:
        return [], [f"{len(uploads)} files are attached; a message can take at most {files.MAX_FILES}."]
    for upload in uploads:
        try:
            good.append(files.read(upload.name, upload.getvalue()).as_dict())
        except files.BadAttachment as e:
            problems.append(str(e))
    if problems and good:
        problems.append("These were fine: " + ", ".join(f"“{a['name']}”" for a in good) + ".")
    return good, problems


# Files: text ones. Which files are text is decided by what they hold (core/attachments.py), not
# by their names: a log may be called anything. No upload limit of our own below the server's
# (200 MB): a file the browser refuses is only marked on its chip, and if the user sends anyway
# the message goes without it; a file that reaches us is refused here, whole message and all.
submitted = st.chat_input("Ask anything…", key="prompt", accept_file="multiple")
if submitted is not None:
    prompt, uploads = submitted.text, list(submitted.files)
    attached_files, problems = attachments_of(uploads) if uploads else ([], [])
    if not problems and (why := files.too_long(prompt, attached_files)):
        problems = [why]
    if not prompt.strip() and not uploads:
        st.toast("Type a message first.", icon="✍️")
    elif len(prompt) > MAX_INPUT_CHARS:
        st.session_state.kept_input = prompt
        st.session_state.pop("kept_input_box", None)  # else the box would keep showing an earlier one
        if uploads:  # the text is shown back below; say the files went nowhere either
            st.session_state.attach_problems = [
                f"Your message is over {MAX_INPUT_CHARS:,} characters, so it was not sent, nor its files ("
                + ", ".join(files.clean_name(u.name) for u in uploads) + ")."]
        st.rerun()
    elif problems:
        st.session_state.attach_problems = problems
        st.session_state.restore_prompt = prompt
        st.rerun()
    else:
        st.session_state.kept_input = None
        make_mine()
        message = {"role": "user", "content": clean_text(prompt), "at": time.time()}
        if attached_files:
            message["attachments"] = attached_files
        messages.append(message)
        save()  # what the user typed is handed to the writer before anything else happens
        show(message)
        answer()
elif regenerate and can_regenerate:
    make_mine()
    messages.pop()
    answer(fresh=True)


@st.fragment(run_every=1.0)
def watch_saving(cid: str) -> None:
    """While this tab's snapshot is unwritten: rerun the page as soon as the writer has news for it
    (another tab got there first, it was deleted, it can't be saved), so the tab says so without
    waiting for a click."""
    if saver.waiting_for(cid, st.session_state.writer) == "moved":
        st.rerun(scope="app")


# Last, after the message box was read: a rerun from here never loses what was just typed.
if conv["id"] is not None:
    waiting = saver.waiting_for(conv["id"], st.session_state.writer)
    if waiting == "moved":
        st.rerun()  # the news came during this run: the next one says it
    elif waiting == "pending":
        watch_saving(conv["id"])
