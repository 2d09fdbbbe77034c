"""Output that survives any terminal, and one log schema, checked on the real commands in child processes.

Each check runs with ``COLUMNS`` unset, at 40 and at 300, stdout and stderr piped (not a terminal): error
lines must come out as one unbroken line, tables with every header and cell whole.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).parent / "fedmedclip"
ADMIN_TOKEN = "cli-terminal-admin-token-7f3k2m9q"
LONG_SITE = "hospital-with-a-rather-long-enrolled-name-0123456789"
LISTENING = re.compile(r"aggregator listening on \S+:(\d+)")
LOG_KEYS = {"ts", "level", "logger", "event"}


def environment(columns: str | None, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FEDMEDCLIP_")}
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = columns
    env.update(HF_HUB_OFFLINE="1", **extra)
    return env


def fedmedclip(*args: str, columns: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *args], capture_output=True, text=True, timeout=120, check=False, env=environment(columns, **env)
    )


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real aggregator (JSON logs) with one enrolled site whose name is longer than a narrow terminal."""
    work = tmp_path_factory.mktemp("aggregator")
    log_path = work / "aggregator.log"
    env = environment(
        None,
        FEDMEDCLIP_AGGREGATOR_DATABASE_URL=f"sqlite:///{work / 'aggregator.sqlite3'}",
        FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN=ADMIN_TOKEN,
        FEDMEDCLIP_AGGREGATOR_LOG_FORMAT="json",
    )
    command = [str(EXE), "aggregator", "serve", "--port", "0", "--insecure-loopback", "--metrics-port", "0"]
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            assert process.stdout is not None
            match = LISTENING.search(process.stdout.readline())
            assert match, log_path.read_text()
            target = f"127.0.0.1:{match.group(1)}"
            description = "a description long enough to overflow any eighty-column terminal, kept whole"
            added = fedmedclip(
                "aggregator",
                "sites",
                "add",
                LONG_SITE,
                "--description",
                description,
                "--server",
                target,
                "--insecure-loopback",
                FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN=ADMIN_TOKEN,
            )
            assert added.returncode == 0, added.stderr
            yield target, log_path
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.parametrize("columns", [None, "40", "300"], ids=["unset", "40", "300"])
def test_error_lines_and_tables_come_out_whole(
    columns: str | None, tmp_path: Path, aggregator: tuple[str, Path]
) -> None:
    occupied = tmp_path / "a-folder-whose-path-is-long-enough-to-be-wrapped-by-a-narrow-terminal" / "data"
    occupied.mkdir(parents=True)
    (occupied / "notes.txt").write_text("keep")
    refused = fedmedclip("synth", str(occupied), columns=columns)
    assert refused.returncode == 2
    line = f"error: synth output {occupied} is not empty"
    assert any(text.startswith(line) for text in refused.stderr.splitlines()), refused.stderr

    target, _ = aggregator
    listed = fedmedclip(
        "aggregator",
        "sites",
        "list",
        "--server",
        target,
        "--insecure-loopback",
        columns=columns,
        FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["site", "enabled", "enrolled", "last", "seen", "software", "device", "description"]
    assert row.startswith(f"{LONG_SITE}  yes ") and row.endswith("kept whole")
    assert "…" not in listed.stdout and "│" not in listed.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FEDMEDCLIP_API_MAX_IMAGES": "many"}, "error: invalid inference API settings: max_images: Input should be"),
        ({"FEDMEDCLIP_API_CONFIG_FILE": "api_key: typo\n"}, "api_key: Extra inputs are not permitted"),
        (
            {"FEDMEDCLIP_API_WEIGHTS": "/nonexistent/weights.pt"},
            "error: cannot load the backbone: weights file or directory '/nonexistent/weights.pt' does not exist",
        ),
    ],
    ids=["bad-value", "unknown-key", "missing-weights"],
)
def test_api_serve_refuses_with_one_line(tmp_path: Path, env: dict[str, str], message: str) -> None:
    settings = {"FEDMEDCLIP_API_BUNDLE_ROOT": str(tmp_path), "FEDMEDCLIP_API_ALLOW_UNAUTHENTICATED": "true", **env}
    if "FEDMEDCLIP_API_CONFIG_FILE" in env:  # the YAML file's text: write it, pass its path
        config = tmp_path / "api.yaml"
        config.write_text(env["FEDMEDCLIP_API_CONFIG_FILE"])
        settings["FEDMEDCLIP_API_CONFIG_FILE"] = str(config)
    result = fedmedclip("api", "serve", "--port", "0", columns="40", **settings)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def log_lines(text: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in text.splitlines() if not line.startswith("error: ")]
    assert lines, text
    return lines


def test_the_three_services_log_one_schema(tmp_path: Path, aggregator: tuple[str, Path]) -> None:
    """Every stderr line of each service is a JSON object with the same keys (apart from an ``error:`` exit)."""
    target, aggregator_log = aggregator
    by_service = {"aggregator": log_lines(aggregator_log.read_text())}

    api = subprocess.Popen(
        [str(EXE), "api", "serve", "--port", "0"],
        env=environment(
            None,
            FEDMEDCLIP_API_BUNDLE_ROOT=str(tmp_path / "bundles"),
            FEDMEDCLIP_API_ALLOW_UNAUTHENTICATED="true",
            FEDMEDCLIP_API_MODEL="fedmedclip-tiny",
            FEDMEDCLIP_API_WEIGHTS="random",
            FEDMEDCLIP_API_LOG_JSON="true",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert api.stdout is not None
    assert "inference API serving on" in api.stdout.readline()
    api.terminate()
    _, api_stderr = api.communicate(timeout=30)
    by_service["api"] = log_lines(api_stderr)
    assert any(str(line["logger"]).startswith("uvicorn") for line in by_service["api"])  # routed through ours

    config = tmp_path / "agent.yaml"
    agent_settings = {
        "site": LONG_SITE,
        "aggregator": target,
        "insecure_loopback": True,
        "token": "not-a-valid-token",
        "data": {"adapter": "imagefolder", "root": str(tmp_path / "no-such-data")},
        "state_dir": str(tmp_path / "state"),
        "bundle_root": str(tmp_path / "bundles"),
        "log_format": "json",
    }
    config.write_text(yaml.safe_dump(agent_settings))
    agent = fedmedclip("agent", "run", "--config", str(config))
    assert agent.returncode != 0
    by_service["agent"] = log_lines(agent.stderr)

    for service, lines in by_service.items():
        for line in lines:
            assert set(line) >= LOG_KEYS, (service, line)
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", str(line["ts"])), (service, line)
            assert line["level"] in {"debug", "info", "warning", "error", "critical"}, (service, line)


def _command_paths() -> list[tuple[str, ...]]:
    """Every command and group of ``fedmedclip``, the service groups included, as argument tuples."""
    import typer.main

    from fedmedclip import cli

    cli._register_service_groups()
    paths: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(cli.app), ())
    return paths


def test_every_help_renders_whole_at_the_default_width() -> None:
    """``--help`` of every command, piped with ``COLUMNS`` unset (80 columns), exits 0 and cuts no word."""
    from typer.testing import CliRunner

    from fedmedclip import cli

    paths = _command_paths()
    assert ("simulate",) in paths and ("backbone", "pack") in paths and ("agent", "check") in paths
    cut: dict[str, list[str]] = {}
    for path in paths:
        result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": None, "TERMINAL_WIDTH": None})
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output
        if "…" in result.output:
            cut[" ".join(path)] = [line for line in result.output.splitlines() if "…" in line]
    assert not cut, cut
