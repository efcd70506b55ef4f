"""导出 Export tab: merged, GGUF, Ollama and Space exports of a run, with their proof.

Placeholder until the tab is built: `build(studio, labels)` returns the tab's widgets,
`wire(studio, ui, context)` connects them (context: form, trust, params, chat, tabs, demo).
"""

from __future__ import annotations

from types import SimpleNamespace


def build(studio, labels):
    return SimpleNamespace()


def wire(studio, ui, context) -> None:
    return None
