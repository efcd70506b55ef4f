"""Rules of the code's layout that a refactor could silently break."""

import subprocess
import sys

from conftest import ROOT

CORE = ["catalog", "chat", "cli", "cli_hub", "cli_report", "config", "data", "data_parse", "data_stats",
        "demo_model", "errors", "estimate", "events", "hub", "hub_local", "hub_progress", "hub_sources",
        "index_model", "models", "runs", "templates", "trainer_setup", "training"]


def test_the_core_library_never_imports_gradio():
    imports = "; ".join(f"import lora_studio.{name}" for name in CORE)
    code = f"import sys; {imports}; print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_core_module_is_listed_here():
    modules = {p.stem for p in (ROOT / "lora_studio").glob("*.py")} - {"__init__", "__main__"}
    assert modules == set(CORE)
