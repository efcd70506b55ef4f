"""Presets: named YAML files of settings, bundled in presets/ or saved by the user in the workspace.

A preset lists only what differs from RunConfig's defaults. `python studio.py train demo-tiny` finds
a preset by name as well as by path; the studio's preset picker, its "save preset" button and its
equivalent-command preview all come from here.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from .config import RunConfig, load_yaml, save_yaml
from .errors import ConfigError
from .i18n import msg, text
from .workspace import Workspace

BUNDLED = Path(__file__).resolve().parents[1] / "presets"
DEFAULT_PRESET = "demo-tiny"


def preset_files(workspace: Workspace) -> dict[str, Path]:
    """Preset name -> file: the bundled ones, then the user's in workspace/presets (which win)."""
    found = {}
    for folder in (BUNDLED, workspace.presets):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found[path.stem] = path
    return found


def find_preset(name_or_path: str | Path, workspace: Workspace) -> Path:
    """A YAML path as given, or the file of the preset with that name."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    files = preset_files(workspace)
    if str(name_or_path) in files:
        return files[str(name_or_path)]
    if path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        raise ConfigError(msg("config.file_not_found"), str(name_or_path), msg("config.file_not_found_fix"))
    raise ConfigError(msg("presets.unknown", name=str(name_or_path)), "presets",
                      msg("presets.unknown_fix", names=", ".join(files) or "-"))


def load_preset(name_or_path: str | Path, workspace: Workspace) -> RunConfig:
    return load_yaml(find_preset(name_or_path, workspace))


def starting_config(workspace: Workspace, name: str = DEFAULT_PRESET) -> RunConfig:
    """The studio's first settings: a preset if it exists, else the defaults."""
    try:
        return load_preset(name, workspace)
    except ConfigError:
        return RunConfig()


def save_preset(config: RunConfig, name: str, workspace: Workspace) -> tuple[Path, bool]:
    """Save the settings that differ from the defaults as a user preset; (file, whether renamed).

    Never over an existing preset, bundled or the user's: a taken name gets -2, -3, ...
    """
    from .runs import sanitize_run_name

    if not (name or "").strip():
        raise ConfigError(msg("presets.no_name"), "presets", msg("presets.no_name_fix"))
    clean = sanitize_run_name(name)
    taken, chosen, number = preset_files(workspace), clean, 1
    while chosen in taken:
        number += 1
        chosen = f"{clean}-{number}"
    path = save_yaml(config, workspace.presets / f"{chosen}.yaml", only_changes=True)
    return path, chosen != clean


def train_command(config: RunConfig, preset: str | None, workspace: Workspace, lang: str = "en") -> str:
    """`python studio.py train PRESET --set ...`: the preset by name plus what differs from it."""
    files = preset_files(workspace)
    base = load_yaml(files[preset]) if preset in files else RunConfig()
    sets = []
    for key, value in config.to_dict().items():
        if getattr(base, key) != value:
            text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
            if text.endswith("..."):
                text = text.rsplit("\n", 1)[0]
            sets.append(f"--set {shlex.quote(f'{key}={text}')}")
    where = preset if preset in files else "settings.yaml"
    command = " \\\n    ".join([f"python studio.py train {shlex.quote(where)}", *sets])
    if preset not in files:
        command = f"# {text('presets.settings_file', lang)}\n" + command
    return command
