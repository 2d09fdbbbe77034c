"""``serve --workers 2``: two processes on one port, each loading the backbone once, both answering, and all of
them gone after SIGTERM."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from tests.api.conftest import KEYS, populate
from tests.api.images import png_bytes
from tests.api.live_server import live_server


@pytest.mark.slow  # two more processes importing torch: about 30 s on an idle 2-core machine
def test_two_workers_share_the_port_and_load_the_backbone_once_each(tmp_path, tiny_backbone, tiny_spec):
    populate(tmp_path / "bundles", tiny_backbone)
    log = tmp_path / "server.log"
    with live_server(tmp_path / "bundles", tiny_spec, log, args=["--workers", "2"]) as server:
        supervisor = psutil.Process(server.process.pid)
        deadline = time.monotonic() + 120
        while log.read_text().count("serving 2 site(s)") < 2:  # both workers finished their startup
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            assert server.process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.2)
        # multiprocessing's spawn start method adds a resource tracker beside the workers.
        workers = [c for c in supervisor.children() if "resource_tracker" not in " ".join(c.cmdline())]
        assert len(workers) == 2, workers
        assert log.read_text().count("loading backbone") == 2  # once per worker, never per request

        png = png_bytes()

        def predict(i: int) -> tuple[int, str]:
            with httpx.Client(base_url=server.url, headers={"X-API-Key": KEYS["a"]}, timeout=60) as http:
                response = http.post("/v1/sites/site-a/predict", files={"files": (f"{i}.png", png)})
                return response.status_code, response.json()["predictions"][0]["predicted_class"]

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(predict, range(24)))
        # Both workers read the same bundle and backbone seed: every answer is the same, whoever served it.
        assert {status for status, _ in answers} == {200}
        assert len({label for _, label in answers}) == 1
    assert server.process.returncode is not None
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
