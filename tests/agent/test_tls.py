"""The agent's TLS and mutual-TLS channel against a TLS-only Federation endpoint (in-process, scripted)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedmedclip.rpc.v1 import federation_pb2, federation_pb2_grpc
from hospital_agent.client import AgentStopped, FederationClient
from hospital_agent.settings import load_settings


def issue(
    name: str, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signer = issuer if issuer is not None else (subject, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256()), key


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Joinable(federation_pb2_grpc.FederationServicer):
    def Join(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 - gRPC method name
        return federation_pb2.JoinResponse(site="site-a", protocol_major=1)


@pytest.fixture
def tls_endpoint(tmp_path: Path) -> Iterator[tuple[int, dict[str, Path]]]:
    ca, ca_key = issue("test ca")
    server_cert, server_key = issue("aggregator", (ca.subject, ca_key))
    client_cert, client_key = issue("site-a", (ca.subject, ca_key))
    files = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
    }
    files["ca"].write_bytes(pem(ca))
    files["cert"].write_bytes(pem(client_cert))
    files["key"].write_bytes(key_pem(client_key))
    credentials = grpc.ssl_server_credentials(
        [(key_pem(server_key), pem(server_cert))], root_certificates=pem(ca), require_client_auth=True
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    federation_pb2_grpc.add_FederationServicer_to_server(Joinable(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield port, files
    server.stop(0)


def client(tmp_path: Path, port: int, tls: dict[str, str], stop: threading.Event) -> FederationClient:
    settings = load_settings(
        None,
        site="site-a",
        aggregator=f"localhost:{port}",
        token="t",
        tls=tls,
        data={"adapter": "imagefolder", "root": str(tmp_path)},
        backoff_initial_s=0.1,
        backoff_max_s=0.2,
        rpc_timeout_s=3.0,
    )
    return FederationClient(settings, settings.require_token(), stop)


def test_mutual_tls_joins_and_a_missing_client_certificate_does_not(
    tmp_path: Path, tls_endpoint: tuple[int, dict[str, Path]]
) -> None:
    port, files = tls_endpoint
    mutual = {"ca_file": str(files["ca"]), "cert_file": str(files["cert"]), "key_file": str(files["key"])}
    assert client(tmp_path, port, mutual, threading.Event()).join().site == "site-a"

    stop = threading.Event()
    anonymous = client(tmp_path, port, {"ca_file": str(files["ca"])}, stop)
    threading.Timer(1.5, stop.set).start()
    with pytest.raises(AgentStopped):  # the handshake fails (UNAVAILABLE), retried until stopped
        anonymous.join()
