#!/usr/bin/env python3
"""Container health checks for the FedMedCLIP images: ``fedmedclip-healthcheck aggregator|agent|api``.

Each check reads the service's own settings from its environment (the same variables the service reads), so
it probes exactly what the service serves. Exit 0 healthy, 1 unhealthy (one line on stderr says why).

- ``aggregator``: the standard gRPC health service (``grpc.health.v1``) on the configured port, over TLS
  verified like the admin CLI does (``FEDMEDCLIP_AGGREGATOR_ADMIN_TLS_CA_FILE`` / ``…_ADMIN_TLS_SERVER_NAME``).
- ``api``: ``GET /healthz`` on the local port (``FEDMEDCLIP_API_HEALTH_PORT``, default 8000), HTTPS when the
  API is configured with a certificate. Liveness of this very process on loopback: the certificate is not
  verified here (its names are for clients, not for 127.0.0.1).
- ``agent``: the settings load, PID 1 is the agent and its ``state.json`` (once written) parses; no torch
  import and no network, so it stays fast on a busy host.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.request


def _aggregator() -> str | None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from aggregator_service.admin_client import open_channel
    from aggregator_service.settings import AggregatorSettings

    settings = AggregatorSettings.load()
    port = settings.port
    channel = open_channel(settings, settings.admin_target or f"127.0.0.1:{port}")
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=4)
    except grpc.RpcError as error:
        return f"gRPC health check failed: {error.code().name} {error.details()}"
    finally:
        channel.close()
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"aggregator reports {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return None


def _api() -> str | None:
    port = int(os.environ.get("FEDMEDCLIP_API_HEALTH_PORT", "8000"))
    tls = bool(os.environ.get("FEDMEDCLIP_API_TLS_CERTFILE"))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/healthz"
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False  # loopback liveness probe of this container's own server
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=4, context=context) as response:  # noqa: S310 - fixed local URL
            status = response.status
    except OSError as error:
        return f"GET {url} failed: {error}"
    return None if status == 200 else f"GET {url} answered {status}"


def _agent() -> str | None:
    # Cheap on purpose (a busy 2-core host runs three agents): no torch import. The settings must load,
    # PID 1 must still be the agent, and its state, once written, must parse.
    from pathlib import Path

    from hospital_agent.settings import load_settings

    config = Path(os.environ.get("FEDMEDCLIP_AGENT_CONFIG", "/etc/fedmedclip/agent.yaml"))
    settings = load_settings(config if config.is_file() else None)
    try:
        command = Path("/proc/1/cmdline").read_bytes().split(b"\0")
    except OSError as error:
        return f"cannot read PID 1: {error}"
    if b"hospital_agent" not in command:
        return "PID 1 is not the hospital agent"
    state = settings.state_dir / "state.json"
    if state.exists():
        try:
            json.loads(state.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            return f"unreadable {state}: {error}"
    elif not settings.state_dir.is_dir():
        return f"state_dir {settings.state_dir} is missing"
    return None


CHECKS = {"aggregator": _aggregator, "api": _api, "agent": _agent}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: fedmedclip-healthcheck {'|'.join(CHECKS)}", file=sys.stderr)
        return 2
    try:
        problem = CHECKS[argv[0]]()
    except Exception as error:  # a health check reports, it never raises
        problem = f"{type(error).__name__}: {error}"
    if problem:
        # One line whatever the error text holds (docker shows the probe's last output line by line).
        print(f"unhealthy: {' '.join(problem.split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
