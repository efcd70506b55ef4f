"""评估 Evaluate tab: the probe grid of every checkpoint, held-out metrics, the best checkpoint.

Placeholder until the tab is built: `build(studio, labels)` returns the tab's widgets,
`wire(studio, ui, context)` connects them (context: form, trust, params, chat, tabs, demo).
"""

from __future__ import annotations

from types import SimpleNamespace


def build(studio, labels):
    return SimpleNamespace()


def wire(studio, ui, context) -> None:
    return None
