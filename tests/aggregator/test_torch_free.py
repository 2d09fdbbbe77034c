"""The aggregator never imports torch: not on import, not serving, not building version 1, not closing a round.

The server runs in a subprocess (this test process has torch loaded); the test drives a run through it
over real gRPC and then reads the subprocess's ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc

from fedmedclip.federation.fam_bytes import fam_from_bytes
from fedmedclip.rpc.v1 import admin_pb2
from tests.aggregator.helpers import ADMIN_TOKEN, DIM, AdminStub, SiteClient, make_update, run_config

SERVER = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    import aggregator_service
    for module in pkgutil.walk_packages(aggregator_service.__path__, "aggregator_service."):
        if ".migrations" not in module.name:  # alembic scripts run inside alembic, not as imports
            importlib.import_module(module.name)
    from aggregator_service.server import start_server
    from aggregator_service.settings import AggregatorSettings
    settings = AggregatorSettings(
        host="127.0.0.1", port=0, insecure_loopback=True, database_url=sys.argv[1], admin_token=sys.argv[2],
        metrics_port=None, sqlite_synchronous="NORMAL", shutdown_grace_s=1.0, max_workers=8,
    )
    running = start_server(settings)
    print(running.port, flush=True)
    sys.stdin.readline()
    running.stop()
    # torch and its kin never; the DP accountant (scipy) only in a run with site-level DP, which this is not.
    family = {"torch", "torchvision", "open_clip", "transformers", "dp_accounting", "scipy"}
    print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in family)), flush=True)
    """
)


def test_serving_and_closing_a_round_never_imports_torch(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'aggregator.sqlite3'}"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, database, ADMIN_TOKEN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        port = int(process.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            admin = AdminStub(channel)
            site = SiteClient(channel, admin.enrol("site-0"), "site-0")
            run_id = admin.start(run_config(min_sites=1, rounds=2))  # version 1, built by the aggregator
            task = site.poll(run_id)
            _, data = site.get_model(task.train.fam_version)
            assert set(fam_from_bytes(data, DIM)) >= {"m1.weight", "m2.kappa"}
            assert site.submit(run_id, 1, task.train.fam_version, make_update(seed=1), num_samples=5).accepted
            status = admin.wait_for(lambda s: s.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED, run_id)
            assert status.rounds[0].output_version > task.train.fam_version  # aggregated and committed
        process.stdin.write("stop\n")
        process.stdin.flush()
        loaded = json.loads(process.stdout.readline())
    finally:
        process.kill()
        process.wait(timeout=30)
    assert loaded == [], f"the aggregator imported {loaded}"
