"""CLI command `eval RUN`: the probe grid and held-out metrics of a run.

Placeholder until built: `register(subparsers, lang)` adds the command.
"""

from __future__ import annotations


def register(sub, lang: str) -> None:
    return None
