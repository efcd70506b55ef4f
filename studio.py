#!/usr/bin/env python
"""LoRA Studio entry point: `python studio.py` starts the web studio, `python studio.py COMMAND` runs the CLI."""

from lora_studio.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
