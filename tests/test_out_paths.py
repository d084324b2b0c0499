"""An --out that cannot be a folder (an existing file, or a path through a file) is one line saying
so, not advice to free space or fix permissions, and the file is left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganforge.cli import main

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "v1-run"


@pytest.mark.parametrize("command", ["sample", "explore"])
@pytest.mark.parametrize("through", [False, True], ids=["file", "inside-a-file"])
def test_an_out_that_is_a_file_is_called_a_file(tmp_path, capsys, command, through):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    out = existing / "sub" if through else existing
    assert main([command, str(FIXTURE), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "free space" not in err[0] and "permissions" not in err[0], err
    assert ("Not a directory" in err[0] or "part of this path is a file" in err[0]) if through else (
        "notes.txt is a file" in err[0])
    assert existing.read_text() == "mine"
