"""The ``fedmedclip`` command as a user runs it: a real process for the entry point, CliRunner for the rest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from fedmedclip.cli import app

runner = CliRunner()


def test_console_script_shows_help_and_version():
    exe = Path(sys.executable).parent / "fedmedclip"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, check=True)
    assert "synth" in out.stdout and "demo" in out.stdout
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=120, check=True)
    assert version.stdout.startswith("fedmedclip ")


def test_synth_writes_imagefolder_sites(tmp_path: Path):
    result = runner.invoke(
        app,
        [
            "synth",
            str(tmp_path / "data"),
            "--sites",
            "2",
            "--images-per-site",
            "16",
            "--image-size",
            "32",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    pngs = sorted((tmp_path / "data").rglob("*.png"))
    assert len(pngs) == 32
    assert {p.parts[-3] for p in pngs} == {"site-1", "site-2"}
    with Image.open(pngs[0]) as image:
        assert image.size == (32, 32)


def test_synth_refuses_bad_options_with_a_message(tmp_path: Path):
    result = runner.invoke(app, ["synth", str(tmp_path), "--difficulty", "3"])
    assert result.exit_code == 2
    assert "difficulty" in result.output
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    result = runner.invoke(app, ["synth", str(occupied), "--images-per-site", "8"])
    assert result.exit_code == 2
    assert (occupied / "notes.txt").read_text() == "keep me"
