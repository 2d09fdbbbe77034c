"""A real uvicorn process on 127.0.0.1, port 0: hot reload under traffic, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fedmedclip.bundle import CURRENT_POINTER, HEAD_FILE
from tests.api.conftest import KEYS, SITE_B_CLASSES, key_configs, populate
from tests.api.images import png_bytes
from tests.bundle.factory import publish

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RELOAD_S = 0.2


@dataclass
class Server:
    url: str
    root: Path
    process: subprocess.Popen[str]
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_backbone, tiny_spec) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("server")
    root = work / "bundles"
    populate(root, tiny_backbone)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "FEDMEDCLIP_API_BUNDLE_ROOT": str(root),
        "FEDMEDCLIP_API_MODEL": tiny_spec.model,
        "FEDMEDCLIP_API_WEIGHTS": "random",
        "FEDMEDCLIP_API_DEVICE": "cpu",
        "FEDMEDCLIP_API_RELOAD_INTERVAL_S": str(RELOAD_S),
        "FEDMEDCLIP_API_API_KEYS": json.dumps([k.model_dump() for k in key_configs()]),
    }
    log = work / "server.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "inference_api", "serve", "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
        )
    url = _wait_for_url(process, log)
    yield Server(url, root, process, log)
    process.send_signal(signal.SIGTERM)
    try:
        # uvicorn shuts down gracefully, then re-raises the signal so that supervisors see a SIGTERM exit.
        assert process.wait(timeout=20) in (0, -signal.SIGTERM), log.read_text()[-2000:]
        assert "Application shutdown complete" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()


def _wait_for_url(process: subprocess.Popen[str], log: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        match = re.search(r"serving on (http://127\.0\.0\.1:(\d+))", line)
        if match:
            assert int(match.group(2)) > 0
            return match.group(1)
    process.kill()
    raise AssertionError(f"server did not report its URL:\n{log.read_text()[-3000:]}")


def test_hot_reload_under_traffic_never_drops_a_request(server, tiny_backbone):
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": KEYS["a"]}, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/v1/sites/site-a/predict", files={"files": ("x.png", png_bytes())})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    versions.append(response.json()["bundle_version"])

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        _wait_until(lambda: versions and versions[-1] == "v0001")
        publish(server.root, "site-a", tiny_backbone, version="v0002", seed=1, fam_version=5)
        _wait_until(lambda: versions[-1] == "v0002")

        # A broken version named by the pointer: refused, logged, and v0002 keeps answering.
        publish(server.root, "site-a", tiny_backbone, version="v0003", make_current=False)
        head = server.root / "site-a" / "v0003" / HEAD_FILE
        head.write_bytes(head.read_bytes()[:-4] + b"\xff" * 4)
        (server.root / "site-a" / CURRENT_POINTER).write_text("v0003\n")
        with httpx.Client(base_url=server.url, headers={"X-API-Key": KEYS["a"]}) as http:
            _wait_until(lambda: http.get("/v1/sites/site-a").json()["last_error"])
            detail = http.get("/v1/sites/site-a").json()
        assert detail["version"] == "v0002" and detail["current"] == "v0003"
        assert "head.safetensors sha256" in detail["last_error"]
        count = len(versions)
        _wait_until(lambda: len(versions) > count + 3)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert statuses and set(statuses) == {200}, f"dropped or failed requests: {set(statuses)}"
    assert versions[-1] == "v0002" and set(versions) == {"v0001", "v0002"}
    assert "bundle refused" in server.log.read_text()


def _wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's /usr/bin/chromium: run scripts/ci/install_chromium.sh"
)
def test_the_page_classifies_an_uploaded_image(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    image = tmp_path / "lesion.png"
    image.write_bytes(png_bytes(size=(120, 90)))
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server.url + "/")

            page.fill("#api-key", "wrong-key")
            page.click("#connect")
            expect(page.locator("#error")).to_contain_text("invalid API key")

            page.fill("#api-key", KEYS["all"])
            page.click("#connect")
            expect(page.locator("#site")).to_have_value("site-a")
            # Random-init backbone and an uncalibrated bundle: the banner says both.
            banner = page.locator("#clinical-warning")
            expect(banner).to_be_visible()
            expect(banner).to_contain_text("Not for clinical use: ")
            assert banner.inner_text().lower().count("not for clinical use") == 1  # said once, not twice
            expect(banner).to_contain_text("not calibrated")

            page.fill("#api-key", KEYS["b"])
            page.click("#connect")
            expect(page.locator("#site")).to_have_value("site-b")
            expect(page.locator("#privacy-fam")).to_have_text(
                "Shared model: trained with differential privacy, ε = 3.00, δ = 1.0e-05."
            )
            expect(page.locator("#privacy-head")).to_contain_text("Private head: no formal privacy guarantee")
            # site-b is calibrated, but the backbone is still random-init: the banner stays, for that reason.
            expect(banner).to_be_visible()
            expect(banner).to_contain_text("randomly initialised")
            expect(banner).not_to_contain_text("not calibrated")
            page.set_input_files("#file", str(image))
            page.click("#classify")
            expect(page.locator("#result")).to_be_visible()

            assert page.locator("#predicted-class").inner_text() in SITE_B_CLASSES
            assert page.locator("#version").inner_text() == "v0001"
            rows = page.locator("#probabilities tbody tr")
            expect(rows).to_have_count(len(SITE_B_CLASSES))
            shares = [page.locator(f"#contrib-{part}").inner_text() for part in ("zero-shot", "head")]
            assert all(s.endswith("%") for s in shares)
            assert abs(sum(float(s.rstrip("%")) for s in shares) - 100) < 0.2
            expect(page.locator("#error")).to_be_hidden()
            expect(page.locator("#ensemble-heading")).to_have_text("Ensemble (calibrated)")
            expect(banner).to_be_visible()
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        finally:
            browser.close()
    # The wrong key's 401 is logged by Chromium as a failed resource; anything else is a page problem.
    assert [p for p in problems if "401" not in p] == []
