from pathlib import Path

import pytest

from fedmedclip.atomic_files import write_atomic


def test_write_replaces_the_file_and_leaves_no_temporary(tmp_path: Path):
    target = tmp_path / "state.json"
    write_atomic(target, b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "state.json"
    write_atomic(target, b"old")

    def broken_replace(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("fedmedclip.atomic_files.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
