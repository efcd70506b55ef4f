"""The chat tab's extras: blind A/B votes, the adapter-strength slider, conversation export, probe buttons.

What a page session remembers beyond its widgets is one `ChatSession` in a `gr.State` (hidden from
the API): its blind rounds (ab.BlindRounds, shuffled with the session's own generator), the true
conversations while the panes show A and B, when each question was sent, and the adapter strength.
While blind, the two panes show only the latest question and its two answers, one per side in the
round's shuffled order; earlier answers would give the sides away. The true conversations continue
underneath and come back when blind mode is switched off. Votes go to the adapter's run folder
(ab.py); the tally shown is the chosen checkpoint's, and the whole run's when it has others too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr

from .. import ab
from ..chat import run_config_for
from ..config import RunConfig
from ..conversation import Conversation, now, write_export
from ..errors import StudioError
from .i18n import say
from .paths import adapter_folder

PROBE_BUTTONS = 6  # Gradio cannot add buttons to a page: this many, shown or hidden per run


class ChatSession:
    """One page's chat state that no widget holds."""

    def __init__(self, seed: int | None = None):
        self.rounds = ab.BlindRounds(seed)
        self.blind = False
        self.strength = 1.0
        self.base: list[dict] = []   # while blind: the true conversations (the panes show A and B)
        self.tuned: list[dict] = []
        self.times: list[str] = []   # when each question of the conversation was sent


def flatten(history: list) -> list[dict]:
    """Chatbot history (content may be a list of parts in Gradio 6) as plain role/content messages."""
    messages = []
    for item in history or []:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, list):
            content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
        if isinstance(content, str) and item.get("role") in ("user", "assistant"):
            messages.append({"role": item["role"], "content": content})
    return messages


def note_question(session: ChatSession, history: list[dict]) -> None:
    """Remember when the question after `history` was sent (replacing later ones: a replay, a new page)."""
    asked = sum(1 for m in history if m["role"] == "user")
    session.times = session.times[:asked] + [now()]


def blind_panes(session: ChatSession, question: dict, base: str, tuned: str, lang: str) -> tuple:
    """(left, right) pane updates for a blind round: the question and one answer each, labelled A and B."""
    round_ = session.rounds.current
    left, right = (tuned, base) if round_.left_is_tuned else (base, tuned)
    return tuple(gr.update(value=[question, {"role": "assistant", "content": answer}], label=say(key, lang))
                 for answer, key in ((left, "chat.pane_a"), (right, "chat.pane_b")))


def pane_labels(lang: str, blind: bool) -> tuple[str, str]:
    return (say("chat.pane_a", lang), say("chat.pane_b", lang)) if blind else \
        (say("ui.chat_base", lang), say("ui.chat_tuned", lang))


# --- where votes go, and the tally -------------------------------------------------------------------
def vote_place(studio, adapter: str | None) -> tuple[Path | None, Path | None]:
    """(adapter folder, its run folder) for the dropdown's value; (None, None) without an adapter."""
    if not adapter:
        return None, None
    folder = adapter_folder(studio.roots, adapter)
    return folder, ab.run_folder_of(folder)


def tally_text(studio, adapter: str | None, lang: str) -> str:
    """The blind votes of the chosen checkpoint (and its whole run's), or where they cannot be kept."""
    try:
        folder, run_dir = vote_place(studio, adapter)
    except StudioError:
        return ""
    if folder is None:
        return say("chat.ab_needs_adapter", lang)
    if run_dir is None:
        return say("chat.ab_not_kept", lang, folder=str(folder))
    mine, whole = ab.tally(run_dir, adapter=folder.name), ab.tally(run_dir)
    text = say("chat.ab_tally", lang, name=f"{run_dir.name} / {folder.name}", tuned=mine.tuned, base=mine.base, ties=mine.ties,
               total=mine.total, file=str(run_dir / ab.VOTES_FILE))
    if whole.total != mine.total:
        text += "  \n" + say("chat.ab_tally_run", lang, run=run_dir.name, tuned=whole.tuned, base=whole.base,
                             ties=whole.ties, total=whole.total)
    return text


def vote(studio, session: ChatSession, choice: str, adapter: str | None, lang: str) -> tuple:
    """Take a vote on the latest blind round: (left label, right label, status, tally) as page updates."""
    folder, run_dir = vote_place(studio, adapter)
    try:
        round_, kept = session.rounds.vote(choice, run_dir, adapter=folder.name if folder else "")
    except ab.ABError as refused:  # a second vote, or nothing to vote on yet: say so, change nothing
        gr.Info(refused.render(lang))
        return gr.update(), gr.update(), gr.update(), tally_text(studio, adapter, lang)
    tuned, base = say("chat.side_tuned", lang), say("chat.side_base", lang)
    left, right = (tuned, base) if round_.left_is_tuned else (base, tuned)
    status = say("chat.ab_revealed", lang, prompt=round_.prompt, left=left, right=right,
                 verdict=say(f"chat.ab_winner_{round_.winner}", lang))
    if not kept:
        status += "  \n" + say("chat.ab_not_kept", lang, folder=str(folder))
    return (gr.update(label=say("chat.pane_a_is", lang, side=left)),
            gr.update(label=say("chat.pane_b_is", lang, side=right)), status, tally_text(studio, adapter, lang))


def blind_switch(studio, session: ChatSession, on: bool, panes: tuple[list, list], adapter, lang: str) -> tuple:
    """Turn blind mode on or off: (left pane, right pane, vote row, status, tally) as page updates."""
    on = bool(on)
    if on == session.blind:  # nothing to switch (a repeated event)
        return gr.update(), gr.update(), gr.update(visible=on), gr.update(), gr.update()
    session.rounds.current = None  # switching reveals or hides the sides: the open round cannot be voted on
    if on:
        session.base, session.tuned = flatten(panes[0]), flatten(panes[1])
    session.blind = on
    left, right = pane_labels(lang, session.blind)
    shown = ([], []) if session.blind else (session.base, session.tuned)
    status = say("chat.ab_started", lang) if session.blind else ""
    return (gr.update(value=shown[0], label=left), gr.update(value=shown[1], label=right),
            gr.update(visible=session.blind), status, tally_text(studio, adapter, lang) if session.blind else "")


# --- probe buttons from the run's probe set -----------------------------------------------------------
def probe_prompts(studio, adapter: str | None) -> list[str]:
    """The chosen run's probe set (probes.probe_set: as edited, else its config.yaml), else the defaults."""
    from ..probes import probe_set

    prompts = RunConfig().probe_prompts
    if adapter:
        try:
            folder = adapter_folder(studio.roots, adapter)
            prompts = probe_set(ab.run_folder_of(folder), run_config_for(folder))  # probes.txt if edited
        except StudioError:
            pass  # not a run's adapter (or not readable here): the default questions
    return [p.strip() for p in prompts if str(p).strip()][:PROBE_BUTTONS]


def probe_updates(prompts: list[str]) -> list:
    return [gr.update(value=prompts[i], visible=True) if i < len(prompts) else gr.update(visible=False)
            for i in range(PROBE_BUTTONS)]


# --- export -----------------------------------------------------------------------------------------
def export_conversation(session: ChatSession, panes: tuple[list, list], details: dict, fmt: str, lang: str) -> str:
    """Write the conversation (the true one while blind) into a new temporary folder Gradio may serve.

    `details`: system_prompt, model, adapter (a folder or ""), sampling (a dict). Returns the file's path.
    """
    base, tuned = (session.base, session.tuned) if session.blind else (flatten(panes[0]), flatten(panes[1]))
    conversation = Conversation(base=base, tuned=tuned, strength=session.strength, times=tuple(session.times),
                                **details)
    folder = Path(tempfile.mkdtemp(prefix="lora-studio-chat-"))  # under the system temp folder Gradio serves
    return str(write_export(conversation, fmt, lang, folder))
