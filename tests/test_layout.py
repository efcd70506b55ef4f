"""Rules of the code's layout that a refactor could silently break.

Each module list is found by walking the package on disk, so a new module (or sub-package) is
covered the day it is added, without anyone remembering to list it here.
"""

from __future__ import annotations

import ast
import collections
import collections.abc
import dataclasses
import importlib
import string
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "lora_studio"
UI = PACKAGE / "ui"
CONFIG_MODULES = ("config.py", "sampling.py", "settings.py")  # where setting names may be spelled


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(include_ui: bool) -> list[str]:
    """Every importable module of lora_studio, sub-packages included (__main__ runs the CLI: left out)."""
    return sorted(module_name(path) for path in PACKAGE.rglob("*.py")
                  if path.name != "__main__.py" and (include_ui or UI not in path.parents))


def source_files(*folders: Path) -> list[Path]:
    return sorted(path for folder in folders for path in folder.rglob("*.py"))


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def shown(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if ROOT in path.parents else path.name


def where(path: Path, node: ast.AST) -> str:
    return f"{shown(path)}:{node.lineno}"


# --- gradio stays in the UI --------------------------------------------------------------------
def test_the_core_library_never_imports_gradio():
    core = package_modules(include_ui=False)
    assert "lora_studio.cli" in core and not any(name.startswith("lora_studio.ui") for name in core)
    code = ("import importlib, sys\n"
            f"for name in {core!r}: importlib.import_module(name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gradio'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_sub_packages_are_walked_too():
    names = package_modules(include_ui=True)
    assert "lora_studio.ui.app" in names and "lora_studio.ui" in names and "lora_studio.__main__" not in names


# --- no module-level mutable state ---------------------------------------------------------------
MUTABLE = (dict, list, set, bytearray, collections.deque, collections.abc.MutableMapping,
           collections.abc.MutableSequence, collections.abc.MutableSet)


def mutable_globals(module) -> list[str]:
    """Module globals that hold state: containers one can change in place, or caches (lru_cache)."""
    found = []
    for name, value in vars(module).items():
        if name.startswith("__") or isinstance(value, type):  # classes: enums and dataclass types too
            continue
        if isinstance(value, MUTABLE) or hasattr(value, "cache_info"):
            found.append(f"{module.__name__}.{name} ({type(value).__name__})")
    return found


def test_no_module_level_mutable_state():
    found = [entry for name in package_modules(include_ui=True)
             for entry in mutable_globals(importlib.import_module(name))]
    assert found == [], "use tuples, frozensets or types.MappingProxyType; keep state on an object"


def test_the_mutable_state_check_catches_what_it_should():
    import functools
    import types

    module = types.ModuleType("example")
    module.TABLE, module.NAMES, module.OK = {}, [], types.MappingProxyType({})
    module.cached = functools.lru_cache(maxsize=None)(lambda: 1)
    module.FIXED, module.KINDS = ("a",), frozenset({"b"})
    assert mutable_globals(module) == ["example.TABLE (dict)", "example.NAMES (list)",
                                       "example.cached (_lru_cache_wrapper)"]


def test_no_global_statements():
    found = [where(path, node) for path in source_files(PACKAGE) for node in ast.walk(parsed(path))
             if isinstance(node, ast.Global)]
    assert found == []


# --- setting names are spelled only in the config modules ----------------------------------------
# Literals that equal a setting's name but name something else, as (file, literal, why). Keep it tiny.
SETTING_NAME_ALLOWED = (
    ("lora_studio/ui/tab_model.py", "dtype", "config.json's own key for the weights' precision in transformers 5"),
)


def setting_names() -> frozenset[str]:
    from lora_studio.config import RunConfig
    from lora_studio.sampling import SamplingConfig

    return frozenset(f.name for cls in (RunConfig, SamplingConfig) for f in dataclasses.fields(cls))


def _is_open_mode(node: ast.Constant, parents: dict) -> bool:
    """open(path, "r"), path.open("r"), open(path, mode="r"): a file mode, not the LoRA rank `r`."""
    parent = parents.get(node)
    if isinstance(parent, ast.keyword):
        return parent.arg == "mode"
    if not isinstance(parent, ast.Call):
        return False
    if isinstance(parent.func, ast.Attribute) and parent.func.attr == "open":
        return parent.args[:1] == [node]
    return isinstance(parent.func, ast.Name) and parent.func.id == "open" and parent.args[1:2] == [node]


def setting_name_literals(path: Path, names: frozenset[str]) -> list[str]:
    tree = parsed(path)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    allowed = {literal for file, literal, _why in SETTING_NAME_ALLOWED if shown(path) == file}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            if node.value in allowed or (node.value == "r" and _is_open_mode(node, parents)):
                continue
            found.append(f"{where(path, node)} {node.value!r}")
    return found


def test_no_setting_name_is_spelled_as_a_string_outside_the_config_modules():
    names = setting_names()
    files = [p for p in source_files(PACKAGE, ROOT / "bench") if not (p.parent == PACKAGE and p.name in CONFIG_MODULES)]
    found = [entry for path in files for entry in setting_name_literals(path, names)]
    assert found == [], "use Setting.<name> / SamplingSetting.<name>, fields_in_group(...) or a metadata fact"


def test_the_setting_name_check_sees_literals(tmp_path):
    example = tmp_path / "example.py"
    example.write_text("x = config['learning_rate']\nwith open(p, 'r') as f: pass\ny = {'top_k': 1}\n"
                       "z = p.open('r', encoding='utf-8')\nw = dict(r=8)['r']\n")
    found = setting_name_literals(example, setting_names())
    assert [entry.split(" ", 1)[1] for entry in found] == ["'learning_rate'", "'top_k'", "'r'"]


# --- errors carry catalogue messages -------------------------------------------------------------
def studio_error_names(trees: list[ast.Module]) -> frozenset[str]:
    """StudioError and every class that derives from it anywhere in the source."""
    from lora_studio import errors

    names = {cls.__name__ for cls in vars(errors).values() if isinstance(cls, type)
             and issubclass(cls, errors.StudioError)}
    classes = [node for tree in trees for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    grew = True
    while grew:
        before = len(names)
        names |= {c.name for c in classes
                  if any((b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")) in names for b in c.bases)}
        grew = len(names) > before
    return frozenset(names)


def _is_text(node: ast.AST | None) -> bool:
    """A string literal, an f-string, or text glued together from them."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value != ""
    if isinstance(node, ast.JoinedStr):
        return True
    return isinstance(node, ast.BinOp) and (_is_text(node.left) or _is_text(node.right))


def plain_text_errors(path: Path, tree: ast.Module, names: frozenset[str]) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        if name not in names:
            continue
        what_and_fix = [node.args[i] for i in (0, 2) if i < len(node.args)]
        what_and_fix += [k.value for k in node.keywords if k.arg in ("what", "fix")]
        if any(_is_text(arg) for arg in what_and_fix):
            found.append(f"{where(path, node)} {name}(...)")
    return found


def test_every_studio_error_is_built_from_catalogue_messages():
    files = source_files(PACKAGE, ROOT / "bench")
    trees = {path: parsed(path) for path in files}
    names = studio_error_names(list(trees.values()))
    assert {"StudioError", "ConfigError", "HubError", "DownloadCancelledError"} <= names
    found = [entry for path, tree in trees.items() for entry in plain_text_errors(path, tree, names)]
    assert found == [], "StudioError(msg('area.what', ...), where, msg('area.fix'))"


# --- every message key used exists, in both languages with the same fields -----------------------
# Functions whose first argument is a catalogue key: i18n's own and the CLI's thin wrappers of them.
KEY_FUNCTIONS = frozenset({"msg", "text", "Msg", "help_text", "say"})


def used_keys(path: Path) -> list[tuple[str, str, bool]]:
    """(where, key or its static prefix, whether it is only a prefix) for each catalogue lookup."""
    found = []
    for node in ast.walk(parsed(path)):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        first = node.args[0]
        if name not in KEY_FUNCTIONS:
            continue
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            found.append((where(path, node), first.value, False))
        elif isinstance(first, ast.JoinedStr) and first.values and isinstance(first.values[0], ast.Constant):
            found.append((where(path, node), first.values[0].value, True))  # f"status.{state}"
    return found


def test_every_message_key_in_the_source_is_in_the_catalogue():
    from lora_studio.i18n import keys

    known = set(keys())
    missing = [f"{place} {key!r}" for path in source_files(PACKAGE, ROOT / "bench")
               for place, key, prefix in used_keys(path)
               if (not any(k.startswith(key) for k in known) if prefix else key not in known)]
    assert missing == []


def format_fields(template: str) -> set[str]:
    return {name for _literal, name, _spec, _conversion in string.Formatter().parse(template) if name is not None}


def test_both_languages_of_a_message_have_the_same_fields():
    from lora_studio.i18n import LANGUAGES, entry, keys

    differ = []
    for key in keys():
        texts = entry(key)
        fields = {lang: format_fields(texts[lang]) for lang in LANGUAGES}
        if len({frozenset(f) for f in fields.values()}) > 1:
            differ.append(f"{key}: {fields}")
    assert differ == []


@pytest.mark.parametrize("template,fields", [("{path}: {count:,} records", {"path", "count"}), ("plain", set())])
def test_format_fields_are_read_from_a_template(template, fields):
    assert format_fields(template) == fields


def test_the_message_checks_see_plain_text_errors_and_unknown_keys(tmp_path):
    example = tmp_path / "example.py"
    example.write_text("raise ConfigError('bad value', 'x')\n"
                       "raise HubError(msg('hub.cancelled'), 'x', f'fix {it}')\n"
                       "raise HubError(msg('hub.cancelled'), 'where is a name', msg('hub.resume_hint'))\n"
                       "label = text('hub.no_such_key', lang) + text(f'status.{state}', lang)\n")
    tree = parsed(example)
    assert plain_text_errors(example, tree, frozenset({"ConfigError", "HubError"})) == [
        "example.py:1 ConfigError(...)", "example.py:2 HubError(...)"]
    assert [(key, prefix) for _place, key, prefix in used_keys(example)] == [
        ("hub.cancelled", False), ("hub.cancelled", False), ("hub.resume_hint", False), ("hub.no_such_key", False),
        ("status.", True)]
