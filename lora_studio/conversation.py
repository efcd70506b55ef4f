"""A side-by-side chat written out as Markdown (to read) or JSON (for programs), for download.

    conversation = Conversation(base=[...], tuned=[...], system_prompt=..., adapter=..., sampling=...)
    path = write_export(conversation, "json", lang, folder)

The JSON file (`FORMAT`, version 1) is one object:

    {"format": "lora-studio-conversation", "version": 1,
     "exported_at": "2026-12-01T20:31:05+00:00",        # ISO 8601, UTC
     "model": "demo-tiny",                                # the base model's name or folder
     "adapter": {"run": "zhenhuan", "checkpoint": "checkpoint-20",   # both null without an adapter
                 "path": "/…/runs/zhenhuan/checkpoints/checkpoint-20", "strength": 1.0},
     "system_prompt": "…",
     "sampling": {"max_new_tokens": 256, "temperature": 0.3, …},     # SamplingConfig's fields
     "panes": {"base":  [{"role": "user", "content": "…", "time": "…"}, {"role": "assistant", …}],
               "tuned": [...]}}

`panes.base` is the base model's side of the chat, `panes.tuned` the adapter's; each message has
`role` ("user" or "assistant") and `content`, and a user message the `time` it was sent when known.
The Markdown file holds the same, with its headings in the reader's language. Files are written
whole (a temporary file renamed into place) into the folder the caller names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .config import Setting
from .files import write_text_atomic
from .i18n import text

FORMAT = "lora-studio-conversation"
FORMATS = ("md", "json")
PANES = ("base", "tuned")


@dataclass(frozen=True)
class Conversation:
    base: list                 # the base pane's messages, role/content dicts
    tuned: list                # the tuned pane's
    system_prompt: str = ""
    model: str = ""
    adapter: str = ""          # the adapter folder, "" without one
    sampling: dict = field(default_factory=dict)
    strength: float = 1.0
    times: tuple = ()          # when each user turn was sent (ISO 8601), oldest first


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def adapter_names(adapter: str) -> tuple[str | None, str | None]:
    """(run name, checkpoint name) of an adapter folder: ("zhenhuan", "checkpoint-20"), (None, None) without one."""
    from .chat import run_config_file

    if not adapter:
        return None, None
    folder = Path(adapter)
    found = run_config_file(folder)
    return (found.parent.name if found is not None else None), folder.name


def _messages(history: list, times: tuple) -> list[dict]:
    messages, turn = [], 0
    for item in history:
        message = {"role": item["role"], "content": item["content"]}
        if item["role"] == "user":
            if turn < len(times):
                message["time"] = times[turn]
            turn += 1
        messages.append(message)
    return messages


def to_record(conversation: Conversation, exported_at: str | None = None) -> dict:
    """The conversation as the JSON object described above."""
    run, checkpoint = adapter_names(conversation.adapter)
    return {"format": FORMAT, "version": 1, "exported_at": exported_at or now(), "model": conversation.model,
            "adapter": {"run": run, "checkpoint": checkpoint, "path": conversation.adapter or None,
                        "strength": conversation.strength},
            str(Setting.system_prompt): conversation.system_prompt, "sampling": dict(conversation.sampling),
            "panes": {name: _messages(getattr(conversation, name), conversation.times) for name in PANES}}


def to_json(conversation: Conversation, exported_at: str | None = None) -> str:
    return json.dumps(to_record(conversation, exported_at), ensure_ascii=False, indent=2) + "\n"


def to_markdown(conversation: Conversation, lang: str, exported_at: str | None = None) -> str:
    """The conversation as Markdown: the settings, then each pane's messages under its own heading."""
    record = to_record(conversation, exported_at)
    adapter = record["adapter"]
    if adapter["checkpoint"]:
        name = f"{adapter['run']} / {adapter['checkpoint']}" if adapter["run"] else adapter["checkpoint"]
        shown = text("chat.md_adapter_value", lang, name=name, strength=f"{adapter['strength']:g}")
    else:
        shown = text("chat.md_no_adapter", lang)
    sampling = ", ".join(f"{key}={value}" for key, value in record["sampling"].items())
    facts = [("chat.md_exported", record["exported_at"]), ("chat.md_model", record["model"] or "—"),
             ("chat.md_adapter", shown), ("chat.md_sampling", sampling or "—"),
             ("chat.md_system", record[Setting.system_prompt] or "—")]
    lines = [f"# {text('chat.md_title', lang)}", ""]
    lines += [f"- **{text(key, lang)}**: {value}" for key, value in facts]
    for pane in PANES:
        lines += ["", f"## {text(f'chat.md_pane_{pane}', lang)}", ""]
        for message in record["panes"][pane]:
            who = text(f"chat.md_{message['role']}", lang)
            when = f" · {message['time']}" if message.get("time") else ""
            lines += [f"**{who}**{when}", ""]
            lines += [f"> {line}" if line else ">" for line in message["content"].splitlines() or [""]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_export(conversation: Conversation, fmt: str, lang: str, folder: Path) -> Path:
    """Write the conversation as `fmt` ("md" or "json") into `folder`, whole; the file's path."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {fmt!r}")
    exported_at = now()
    body = to_markdown(conversation, lang, exported_at) if fmt == "md" else to_json(conversation, exported_at)
    stamp = exported_at[:19].replace("-", "").replace(":", "").replace("T", "-")
    return write_text_atomic(Path(folder) / f"conversation-{stamp}.{fmt}", body)
