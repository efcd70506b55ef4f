"""CLI command `export RUN --to merged|gguf|ollama|space`.

Placeholder until built: `register(subparsers, lang)` adds the command.
"""

from __future__ import annotations


def register(sub, lang: str) -> None:
    return None
