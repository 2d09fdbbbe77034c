"""TLS and mutual TLS, the health service, Prometheus metrics, and structured JSON logs."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import urllib.request
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aggregator_service.logs import configure_logging, event
from aggregator_service.server import RunningServer
from tests.aggregator.helpers import AdminStub, SiteClient, make_update, rpc_error, run_config


def _cert(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, ca: bool
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("test CA", ca_key, None, ca=True)
    files = {
        "ca": _pem(ca),
        "server_cert": _pem(_cert("aggregator", server_key, (ca.subject, ca_key), ca=False)),
        "server_key": _key_pem(server_key),
        "client_cert": _pem(_cert("site-a", client_key, (ca.subject, ca_key), ca=False)),
        "client_key": _key_pem(client_key),
    }
    for name, data in files.items():
        (folder / f"{name}.pem").write_bytes(data)
    return {name: folder / f"{name}.pem" for name in files}


def _tls_server(server_factory: Callable[..., RunningServer], pki: dict[str, Path], mutual: bool) -> RunningServer:
    return server_factory(
        insecure_loopback=False,
        tls_cert_file=pki["server_cert"],
        tls_key_file=pki["server_key"],
        tls_client_ca_file=pki["ca"] if mutual else None,
    )


def test_tls_server_serves_tls_clients_only(server_factory: Callable[..., RunningServer], pki: dict[str, Path]) -> None:
    server = _tls_server(server_factory, pki, mutual=False)
    credentials = grpc.ssl_channel_credentials(root_certificates=pki["ca"].read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
        assert AdminStub(channel).enrol("site-a").startswith("fmc_")
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as plain:
        assert rpc_error(lambda: AdminStub(plain).enrol("site-b")).code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_requires_a_client_certificate(
    server_factory: Callable[..., RunningServer], pki: dict[str, Path]
) -> None:
    server = _tls_server(server_factory, pki, mutual=True)
    roots = pki["ca"].read_bytes()
    anonymous = grpc.ssl_channel_credentials(root_certificates=roots)
    with grpc.secure_channel(f"127.0.0.1:{server.port}", anonymous) as channel:
        assert rpc_error(lambda: AdminStub(channel).enrol("site-a")).code() == grpc.StatusCode.UNAVAILABLE
    identified = grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=pki["client_key"].read_bytes(),
        certificate_chain=pki["client_cert"].read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{server.port}", identified) as channel:
        assert AdminStub(channel).enrol("site-a").startswith("fmc_")


def test_health_and_metrics(server_factory: Callable[..., RunningServer]) -> None:
    server = server_factory(metrics_port=0)
    assert server.metrics_port
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "fedmedclip.rpc.v1.Federation", "fedmedclip.rpc.v1.Admin"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        admin = AdminStub(channel)
        site = SiteClient(channel, admin.enrol("site-a"), "site-a")
        run_id = admin.start(run_config(rounds=1))
        site.submit(run_id, 1, site.poll(run_id).train.fam_version, make_update(1))
        admin.wait_for(lambda s: s.rounds[0].output_version > 0, run_id)
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    assert 'fedmedclip_aggregator_rpcs_total{code="OK",method="SubmitUpdate"} 1.0' in text
    assert 'fedmedclip_aggregator_updates_total{outcome="accepted"} 1.0' in text
    assert "fedmedclip_aggregator_round_close_seconds_count 1.0" in text
    assert "fedmedclip_aggregator_update_validation_seconds_count 1.0" in text


def test_json_logs_are_one_line_per_event_with_ids() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging("json", "INFO", stream)
    try:
        event(logging.getLogger("aggregator_service"), "round closed", run="r1", round=3, site=None, version=7)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    [line] = stream.getvalue().splitlines()
    record = json.loads(line)
    assert (record["event"], record["run"], record["round"], record["version"]) == ("round closed", "r1", 3, 7)
    assert "site" not in record and record["level"] == "info"
