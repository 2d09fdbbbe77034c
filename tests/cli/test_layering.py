"""The core's ``fedmedclip`` command imports no service; the services add their groups through entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SERVICES = ("aggregator_service", "hospital_agent", "inference_api")


def test_importing_the_core_cli_loads_no_service() -> None:
    probe = f"import sys, fedmedclip.cli\nprint(sorted(m for m in sys.modules if m.split('.')[0] in {SERVICES!r}))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_help_lists_every_group_from_the_entry_points() -> None:
    exe = Path(sys.executable).parent / "fedmedclip"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, check=True)
    listed = {line.strip("│ ").split(" ")[0] for line in out.stdout.splitlines()}
    assert {"synth", "demo", "experiment", "aggregator", "agent", "api"} <= listed, out.stdout
    for group in ("aggregator", "agent", "api"):
        sub = subprocess.run([str(exe), group, "--help"], capture_output=True, text=True, timeout=120, check=False)
        assert sub.returncode == 0 and "Usage: fedmedclip " + group in sub.stdout, sub.stdout + sub.stderr
