"""A workspace that is a file, read-only or not ours is one clear message when a command that writes starts."""

import errno
import os

import pytest

from lora_studio.errors import StudioError
from lora_studio.training import TrainingJob

from .test_crash_safety import small_config
from .test_disk import mount_tmpfs


def failing_probe(code: int):
    """tempfile.mkstemp as it fails in a folder we cannot write in (root ignores permission bits)."""
    def mkstemp(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return mkstemp


@pytest.mark.parametrize("code,what,fix", [
    (errno.EROFS, "the workspace is on a read-only disk", "Choose a folder you can write to with --workspace DIR"),
    (errno.EACCES, "no permission to write in the workspace", "Give this user write permission"),
    (errno.EPERM, "no permission to write in the workspace", "Give this user write permission"),
    (errno.ENOSPC, "the disk that holds the workspace is full", "Free some disk space first"),
    (errno.EIO, "cannot write in the workspace (", "Choose a folder you can write to"),
])
def test_a_workspace_we_cannot_write_in_is_one_message_at_start(monkeypatch, ws, code, what, fix):
    import tempfile

    from lora_studio.workspace import ensure_writable

    monkeypatch.setattr(tempfile, "mkstemp", failing_probe(code))
    with pytest.raises(StudioError) as caught:
        ensure_writable(ws)
    assert caught.value.message.startswith(f"{ws.root}: {what}") and fix in caught.value.message
    assert caught.value.render("zh") != caught.value.message


@pytest.mark.parametrize("layout", ["file", "parent is a file", "runs is a file"])
def test_a_workspace_that_is_a_file_is_one_message_at_start(demo_model_dir, tmp_path, layout):
    from lora_studio.workspace import Workspace

    root = tmp_path / "ws"
    if layout == "file":
        root.write_text("not a folder")
        blocking = root
    elif layout == "parent is a file":
        (tmp_path / "file").write_text("x")
        root, blocking = tmp_path / "file" / "ws", tmp_path / "file"
    else:
        root.mkdir()
        (root / "runs").write_text("x")
        blocking = root / "runs"
    with pytest.raises(StudioError, match="the workspace is not a folder") as caught:
        TrainingJob(small_config(demo_model_dir), Workspace(root)).start()
    assert caught.value.message.startswith(f"{blocking}: ") and "--workspace DIR" in caught.value.message


@pytest.mark.parametrize("command", [["train", "demo-tiny"], ["demo-model"], ["train", "--resume", "x"]])
def test_the_cli_checks_the_workspace_before_a_command_that_writes(tmp_path, capsys, command):
    from lora_studio.cli import main

    blocked = tmp_path / "ws"
    blocked.write_text("a file")
    assert main(["--workspace", str(blocked), *command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {blocked}: the workspace is not a folder (this is a file).")


def test_a_read_only_workspace_really_mounted(tmp_path):
    import subprocess

    from lora_studio.workspace import Workspace, ensure_writable

    root = tmp_path / "ro"
    root.mkdir()
    mount_tmpfs(root, "ro,size=64k")
    try:
        with pytest.raises(StudioError, match="the workspace is on a read-only disk"):
            ensure_writable(Workspace(root))
    finally:
        subprocess.run(["umount", str(root)], check=True)
