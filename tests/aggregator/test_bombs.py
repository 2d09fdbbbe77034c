"""Decompression bombs against a real aggregator process: its RSS, read from /proc, barely moves.

The run's FAM is 16 wide (a valid body is a few KiB). Eight sites send at once: four payloads that declare
a 64 MiB raw body (refused from the header, before decompressing) and four that declare an honest raw
size but whose zstd stream inflates to 64 MiB (cut off by the streamed decompression at the declared size).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from fedmedclip.federation import payload as framing
from tests.aggregator.helpers import AdminStub, SiteClient, make_update, run_config
from tests.aggregator.test_lifecycle import ServerProcess, processes  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")

BOMB_RAW = 64 << 20


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def declared_bomb() -> bytes:
    """Honest framing around a body that truly is 64 MiB (of zeros) and says so."""
    header = {"byte_order": "little", "codec": {}, "tensors": []}
    return framing.pack(header, bytes(BOMB_RAW), "zstd")


def undeclared_bomb() -> bytes:
    """A real update's header (its raw size included) in front of a zstd stream that inflates to 64 MiB."""
    real = make_update(7).payload
    header, _ = framing.unpack(real, 1 << 26)
    compressed = framing.compress(bytes(BOMB_RAW), "zstd")
    header["body"] = {**header["body"], "compressed_bytes": len(compressed)}
    header["body"]["sha256"] = hashlib.sha256(compressed).hexdigest()
    # Framed by hand: pack() would describe the body truthfully.
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return struct.pack("<4sHI", framing.MAGIC, framing.FORMAT_VERSION, len(header_bytes)) + header_bytes + compressed


def test_eight_concurrent_bombs_raise_the_aggregator_rss_by_less_than_64_mib(
    processes: Callable[[], ServerProcess],  # noqa: F811 - the fixture imported above
) -> None:
    server = processes()
    admin = AdminStub(server.channel)
    sites = [SiteClient(server.channel, admin.enrol(f"site-{i}"), f"site-{i}") for i in range(8)]
    run_id = admin.start(run_config())
    # Warm every code path once with a valid update, so the baseline includes the decoder's own imports.
    assert sites[0].submit(run_id, 1, 1, make_update(1)).accepted
    bombs = [declared_bomb() if i % 2 else undeclared_bomb() for i in range(8)]
    assert all(len(b) < 64 << 10 for b in bombs)
    time.sleep(0.5)
    baseline = rss_bytes(server.process.pid)
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_bytes(server.process.pid))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    update = make_update(2)

    def send(i: int) -> str:
        sha = hashlib.sha256(bombs[i]).hexdigest()
        try:
            sites[i].submit(run_id, 1, 1, update, payload=bombs[i], sha256=sha)
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
        return "OK"

    try:
        with futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(send, range(8)))
        time.sleep(0.3)
    finally:
        done.set()
        sampler.join()
    assert all(a.startswith("INVALID_ARGUMENT") for a in answers), answers
    assert any("above the limit" in a for a in answers), answers  # declared: refused from the header
    assert any("more than the" in a for a in answers), answers  # undeclared: cut off while inflating
    grown = (peak - baseline) / (1 << 20)
    print(f"RSS baseline {baseline / (1 << 20):.1f} MiB, peak growth {grown:.1f} MiB")
    assert grown < 64, f"RSS grew by {grown:.1f} MiB during the bombs"
