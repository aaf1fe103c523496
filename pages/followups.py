"""Follow-ups: the questions nobody could answer, kept so someone can get back to the user.
List, filter, export as CSV, mark answered. Locked like Chaos: kept questions are users' words.
A conversation is named by its label, never its id: the id opens it (`?c=`), and with no admin
password this page is open to anyone. The chat page shows the same label, for users to quote."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import streamlit as st

from core.export import csv_bytes
from core.store import StoreError
from core.store.conversations import label_for
from pages.shared import admin_unlocked, banners, runtime

kept = runtime().followups  # each call time-bounded: a silent database can't freeze the page
st.title("📥 Follow-ups")
banners()

if not admin_unlocked("Kept questions are what users typed, so this page is locked."):
    st.stop()

health = kept.health()
st.caption(f"Kept in `{health['store']}`. Also: `python -m core followups [--json] [--all] [--answer ID]`.")
if health["status"] != "ok":
    lost = f" {health['failed']} question(s) could not be kept." if health["failed"] else ""
    st.error(f"**The follow-up store is failing**: {health['last_error']}.{lost} Replies say so instead of "
             "promising a follow-up.", icon="🛑")

left, right = st.columns([1, 2])
show = left.radio("Show", ["Open", "Answered", "All"], horizontal=True, key="followups_show")
search = right.text_input("Search the questions", key="followups_search")
answered = {"Open": False, "Answered": True, "All": None}[show]
try:
    items = kept.list(answered=answered, search=search)
except StoreError as e:
    st.error(f"Can't read the kept questions: {e}", icon="🛑")
    st.stop()


def _when(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, timezone.utc) if t is not None else None


table = pd.DataFrame([{"id": f.id, "asked": _when(f.asked_at), "question": f.question, "why": f.why,
                       "conversation": label_for(f.conversation_id), "who": f.who, "answered": _when(f.answered_at)}
                      for f in items], columns=["id", "asked", "question", "why", "conversation", "who", "answered"])
st.markdown(f"**{len(items)}** question(s) shown")
st.dataframe(table, hide_index=True, width="stretch", key="followups_table")
st.download_button("Download as CSV", csv_bytes(table.astype(object).where(table.notna(), None).to_dict("records"),
                                               list(table.columns)),
                   "followups.csv", "text/csv", key="followups_csv", disabled=table.empty)

still_open = [f for f in items if not f.answered]
if still_open:
    with st.form("mark_answered"):
        pick = st.selectbox("Question", [f.id for f in still_open], key="followups_pick",
                            format_func=lambda i: next(f"#{f.id} — {' '.join(f.question.split())[:80]}"
                                                       for f in still_open if f.id == i))
        if st.form_submit_button("Mark answered"):
            try:
                kept.mark_answered(pick)
            except StoreError as e:
                st.error(f"Can't mark it answered: {e}", icon="🛑")
            else:
                st.toast(f"Question #{pick} marked answered.")
                st.rerun()
