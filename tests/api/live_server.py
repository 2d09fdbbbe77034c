"""Start ``fedmedclip api serve`` as a real process on 127.0.0.1, port 0, and stop it with SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedmedclip.model.backbone import BackboneSpec
from tests.api.conftest import key_configs


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[str]
    log: Path

    @property
    def host_port(self) -> str:
        return self.url.removeprefix("http://")


@contextlib.contextmanager
def live_server(
    root: Path, spec: BackboneSpec, log: Path, *, args: Sequence[str] = (), env: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "FEDMEDCLIP_API_BUNDLE_ROOT": str(root),
        "FEDMEDCLIP_API_MODEL": spec.model,
        "FEDMEDCLIP_API_WEIGHTS": "random",
        "FEDMEDCLIP_API_SEED": str(spec.seed),
        "FEDMEDCLIP_API_DEVICE": "cpu",
        "FEDMEDCLIP_API_API_KEYS": json.dumps([k.model_dump() for k in key_configs()]),
        **(env or {}),
    }
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "inference_api", "serve", "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=environment,
        )
    try:
        yield LiveServer(_wait_for_url(process, log), process, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _wait_for_url(process: subprocess.Popen[str], log: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        match = re.search(r"serving on (http://127\.0\.0\.1:(\d+))", line)
        if match:
            return match.group(1)
    process.kill()
    raise AssertionError(f"server did not report its URL:\n{log.read_text()[-3000:]}")
