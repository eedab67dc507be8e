"""The one implementation of temporaries, atomic writes and writability checks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from avsegformer.errors import NonFiniteError, OutputNotWritableError
from avsegformer.fileio import (
    atomic_path,
    atomic_write_text,
    check_writable,
    is_temporary_name,
    sweep_stale_temporaries,
    temporary_sibling,
)
from avsegformer.finite import non_finite_count, require_finite


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk gone")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_folder_replaces_whole_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("x")
    with atomic_path(target) as temporary:
        temporary.mkdir()
        (temporary / "new.txt").write_text("y")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sweep_removes_only_dead_processes_temporaries(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".last.safetensors.tmp-{dead_pid}-0123abcd"
    stale.write_bytes(b"x" * 10)
    stale_dir = tmp_path / f".clip.tmp-{dead_pid}-89abcdef"
    stale_dir.mkdir()
    live = temporary_sibling(tmp_path / "best.safetensors")
    live.write_bytes(b"y")
    users = tmp_path / ".notes.tmp"  # not ours: never touched
    users.write_text("keep")
    removed = sweep_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale.name, stale_dir.name])
    assert live.exists() and users.exists()
    assert is_temporary_name(live.name) and not is_temporary_name(users.name)


def test_check_writable_names_the_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputNotWritableError, match="is a file, not a folder"):
        check_writable(blocker, folder=True)
    with pytest.raises(OutputNotWritableError, match="is a folder, not a file"):
        check_writable(tmp_path)
    with pytest.raises(OutputNotWritableError, match="file"):
        check_writable(blocker / "deeper" / "x.json")
    check_writable(tmp_path / "new" / "deeper" / "x.json")  # creatable: fine
    assert not (tmp_path / "new").exists()  # and nothing was created
    if os.geteuid() != 0:  # root writes through permissions
        readonly = tmp_path / "ro"
        readonly.mkdir()
        readonly.chmod(0o500)
        with pytest.raises(OutputNotWritableError, match="ro"):
            check_writable(readonly / "x.json")


def test_require_finite_names_what_and_counts():
    require_finite(torch.zeros(3), "x")
    require_finite(torch.zeros(3, dtype=torch.int64), "ints")
    with pytest.raises(NonFiniteError, match=r"audio of clip\.wav: 2 of 4 values"):
        require_finite(torch.tensor([0.0, float("nan"), float("inf"), 1.0]), "audio of clip.wav")
    with pytest.raises(NonFiniteError, match="1 of 2"):
        require_finite(np.array([np.nan, 1.0], dtype=np.float32), "array")
    assert non_finite_count(torch.tensor([float("-inf")], dtype=torch.bfloat16)) == 1


def test_sigterm_is_an_exception_that_runs_cleanup(tmp_path):
    """The command line turns SIGTERM into Terminated: temporaries go, exit status 143."""
    script = f"""
import os, signal, sys, time
from avsegformer import cli
from avsegformer.fileio import atomic_path

def run(args):
    with atomic_path({str(tmp_path / "out")!r}) as temporary:
        temporary.mkdir()
        (temporary / 'partial').write_text('x')
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    return 0

cli.COMMANDS = {{'models': ('avsegformer.commands.models', 'x')}}
import avsegformer.commands.models as models
models.run = run
sys.exit(cli.main(['models']))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 143, done.stderr
    assert "terminated" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
