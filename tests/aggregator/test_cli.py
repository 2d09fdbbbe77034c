"""The operator commands against a real server: sites, runs, versions (export writes safetensors + manifest)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from aggregator_service.cli import app
from aggregator_service.server import RunningServer
from fedmedclip.federation.fam_bytes import fam_from_bytes
from tests.aggregator.helpers import ADMIN_TOKEN, DIM, SiteClient, make_update

runner = CliRunner()


@pytest.fixture
def cli(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    monkeypatch.setenv("FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("COLUMNS", "250")  # rich would otherwise fold the tables to 80 columns
    target = ["--server", f"127.0.0.1:{server.port}", "--insecure-loopback"]

    def invoke(*args: str, expect: int = 0) -> str:
        """stdout and stderr together (errors go to stderr)."""
        result = runner.invoke(app, [*args, *target])
        assert result.exit_code == expect, result.output
        return result.output

    return invoke


def test_operator_workflow(cli: Callable[..., str], server: RunningServer, tmp_path: Path) -> None:
    token = cli("sites", "add", "site-a", "--description", "Hospital A").split()[-1]
    assert token.startswith("fmc_") and len(token) > 40
    assert "ALREADY_EXISTS" in cli("sites", "add", "site-a", expect=1)
    cli("sites", "add", "site-b")
    listing = cli("sites", "list")
    assert "site-a" in listing and "Hospital A" in listing and token not in listing

    run_file = tmp_path / "run.yaml"
    run_file.write_text(f"embed_dim: {DIM}\nrounds: 2\nbackbone:\n  model: fedmedclip-tiny\n  weights: null\n")
    run_id = cli("runs", "start", "--run-config", str(run_file), "--min-sites", "1", "--name", "cli").split()[-1]
    assert len(run_id) == 16
    site = SiteClient(_channel(server), token, "site-a")
    base = site.poll(run_id).train.fam_version
    assert site.submit(run_id, 1, base, make_update(3), num_samples=12).accepted
    cli("sites", "revoke", "site-b")  # the last missing site goes: site-a alone completes round 1
    _wait_for_version(server, run_id, 2)

    status = cli("runs", "status", run_id)
    assert "closed" in status and "site-a" in status and "accepted" in status and "train_loss" in status
    document = json.loads(cli("runs", "status", run_id, "--json"))
    assert document["run_id"] == run_id
    assert document["rounds"][0]["participants"][0]["site"] == "site-a"
    assert run_id in cli("runs", "list")
    versions = cli("versions", "list", run_id)
    assert "site-a (12)" in versions

    out = tmp_path / "export"
    cli("versions", "export", "2", "--out", str(out))
    data = (out / "fam-v2.safetensors").read_bytes()
    manifest = json.loads((out / "fam-v2.manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert (manifest["round"], manifest["parent_version"], manifest["run_id"]) == (1, base, run_id)
    assert manifest["contributions"] == [
        {"site": "site-a", "num_samples": 12, "payload_bytes": manifest["contributions"][0]["payload_bytes"]}
    ]
    assert manifest["run_config"]["embed_dim"] == DIM
    assert set(fam_from_bytes(data, DIM)) >= {"m1.weight", "m2.kappa"}
    assert "stopped" in cli("runs", "stop", run_id)


def test_cli_refuses_plaintext_off_loopback_and_bad_credentials(
    cli: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(app, ["sites", "list", "--server", "10.0.0.1:50051", "--insecure-loopback"])
    assert result.exit_code == 2 and "refusing plaintext" in result.output
    monkeypatch.setenv("FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN", "x" * 8 + "y" * 8 + "0123456789abcdef")
    assert "UNAUTHENTICATED" in cli("sites", "list", expect=1)


def _channel(server: RunningServer) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{server.port}")


def _wait_for_version(server: RunningServer, run_id: str, version: int) -> None:
    deadline = time.monotonic() + 15
    while server.svc.store.get_version(version) is None:
        assert time.monotonic() < deadline, "round did not close"
        time.sleep(0.05)
