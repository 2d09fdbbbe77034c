"""One site whose ``current`` is a FIFO (as a hung mount would behave: open() never returns) must not stop
the other sites' new versions from being swapped in, in the registry or in a running server."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedmedclip.bundle import CURRENT_POINTER
from fedmedclip.model.backbone import Backbone, BackboneSpec
from inference_api.metrics import ApiMetrics
from inference_api.registry import ModelRegistry
from tests.api.conftest import KEYS
from tests.api.live_server import live_server
from tests.bundle.factory import publish


@contextlib.contextmanager
def fifo_site(root: Path, site: str = "site-stuck") -> Iterator[Path]:
    (root / site).mkdir()
    fifo = root / site / CURRENT_POINTER
    os.mkfifo(fifo)
    try:
        yield fifo
    finally:
        # Give the stuck reader its writer, so its thread returns; then remove the FIFO.
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        for thread in threading.enumerate():  # let it finish (and log) while this test still owns the log
            if thread.name == f"scan-{site}":
                thread.join(10)
        fifo.unlink()


def test_a_fifo_blocks_only_its_own_site(tmp_path, tiny_backbone: Backbone):
    publish(tmp_path, "site-a", tiny_backbone, version="v1")
    metrics = ApiMetrics()
    registry = ModelRegistry(tmp_path, tiny_backbone, metrics, site_timeout_s=0.5)
    with fifo_site(tmp_path):
        registry.scan()
        assert _served(registry, "site-a") == "v1"
        stuck = registry.get("site-stuck")
        assert stuck is not None and stuck.loaded is None and "scan blocked" in (stuck.error or "")

        publish(tmp_path, "site-a", tiny_backbone, version="v2", seed=1)
        registry.scan()  # the stuck thread is still in open(); no second one is started for that site
        assert _served(registry, "site-a") == "v2"
        stuck = registry.get("site-stuck")
        assert stuck is not None and "scan blocked" in (stuck.error or "")
        assert "fedmedclip_api_blocked_scans 1.0" in metrics.render().decode()
        assert sum(t.name == "scan-site-stuck" for t in threading.enumerate()) == 1


@pytest.mark.timeout(120)
def test_a_running_server_keeps_reloading_the_other_sites(tmp_path, tiny_backbone: Backbone, tiny_spec: BackboneSpec):
    root = tmp_path / "bundles"
    publish(root, "site-a", tiny_backbone, version="v0001")
    env = {"FEDMEDCLIP_API_RELOAD_INTERVAL_S": "0.2", "FEDMEDCLIP_API_BUNDLE_SCAN_TIMEOUT_S": "0.5"}
    with fifo_site(root), live_server(root, tiny_spec, tmp_path / "api.log", env=env) as server:
        assert _site(server.url, "site-a")["version"] == "v0001"
        publish(root, "site-a", tiny_backbone, version="v0002", seed=1)
        deadline = time.monotonic() + 30
        while _site(server.url, "site-a")["version"] != "v0002":
            assert time.monotonic() < deadline, "site-a's new version was never swapped in"
            time.sleep(0.2)
        assert "scan blocked" in _site(server.url, "site-stuck")["last_error"]
    assert "bundle folder scan blocked" in (tmp_path / "api.log").read_text()


def _served(registry: ModelRegistry, site: str) -> str | None:
    state = registry.get(site)
    return state.loaded.bundle.version if state is not None and state.loaded is not None else None


def _site(url: str, site: str) -> dict:
    request = urllib.request.Request(f"{url}/v1/sites/{site}", headers={"X-API-Key": KEYS["all"]})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())
