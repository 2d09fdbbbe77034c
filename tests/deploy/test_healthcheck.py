"""The container health probe (deploy/docker/healthcheck.py) as docker runs it: a child process whose exit
status and one stderr line are all an operator sees."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"


def probe(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("FEDMEDCLIP_")}
    clean.pop("COLUMNS", None)
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**clean, "HF_HUB_OFFLINE": "1", **env},
    )


@pytest.mark.parametrize(
    ("service", "env", "reason"),
    [
        ("aggregator", {"FEDMEDCLIP_AGGREGATOR_PORT": "not-a-port"}, "invalid aggregator settings: port"),
        ("agent", {"FEDMEDCLIP_AGENT_CONFIG": "/nonexistent/agent.yaml"}, "invalid agent settings"),
        ("api", {"FEDMEDCLIP_API_HEALTH_PORT": "1"}, "GET http://127.0.0.1:1/healthz failed"),
    ],
)
def test_bad_settings_or_no_server_is_one_unhealthy_line(service: str, env: dict[str, str], reason: str) -> None:
    result = probe(service, **env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unhealthy: ") and reason in lines[0], result.stderr


def test_unknown_check_prints_usage() -> None:
    result = probe("database")
    assert result.returncode == 2 and result.stderr.strip() == "usage: fedmedclip-healthcheck aggregator|api|agent"
