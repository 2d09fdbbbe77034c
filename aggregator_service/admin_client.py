"""The admin CLI's side of the Admin service: a channel with the right credentials, and readable errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc

from aggregator_service.settings import AggregatorSettings, ConfigError, is_loopback
from fedmedclip.rpc.v1 import admin_pb2_grpc, common_pb2

DEFAULT_TIMEOUT_S = 30.0


class AdminCallError(RuntimeError):
    """An Admin RPC failed; the message names the status code and the server's explanation."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def _host_of(target: str) -> str:
    if target.startswith("["):
        return target[1 : target.index("]")]
    return target.rsplit(":", 1)[0]


def open_channel(settings: AggregatorSettings, target: str | None = None) -> grpc.Channel:
    """A channel to the aggregator: TLS as configured, plaintext only to a loopback target when allowed."""
    target = target or settings.client_target()
    options: list[tuple[str, Any]] = [("grpc.max_receive_message_length", settings.max_message_bytes)]
    use_tls = settings.admin_tls_ca_file is not None or settings.uses_tls
    if not use_tls:
        if not (settings.insecure_loopback and is_loopback(_host_of(target))):
            raise ConfigError(f"refusing plaintext to {target}: configure TLS, or use --insecure-loopback on loopback")
        return grpc.insecure_channel(target, options=options)
    try:
        ca_file = settings.admin_tls_ca_file or settings.tls_cert_file  # a self-signed server cert is its own CA
        roots = None if ca_file is None else ca_file.read_bytes()
        key = None if settings.admin_tls_key_file is None else settings.admin_tls_key_file.read_bytes()
        chain = None if settings.admin_tls_cert_file is None else settings.admin_tls_cert_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read TLS files: {exc}") from exc
    if settings.admin_tls_server_name:
        options.append(("grpc.ssl_target_name_override", settings.admin_tls_server_name))
    credentials = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
    return grpc.secure_channel(target, credentials, options=options)


class AdminClient:
    """Admin RPCs with the admin credential attached; ``AdminCallError`` on failure."""

    def __init__(self, channel: grpc.Channel, admin_token: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._stub = admin_pb2_grpc.AdminStub(channel)
        self._metadata = (("authorization", f"Bearer {admin_token}"),)
        self._timeout = timeout_s

    def call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise AdminCallError(exc.code(), exc.details() or "") from exc

    def download(self, method: str, request: Any) -> tuple[common_pb2.ModelHeader, bytes]:
        """A streamed model: its header and all data bytes (the caller verifies the sha256)."""
        try:
            stream: Iterator[common_pb2.ModelChunk] = getattr(self._stub, method)(
                request, metadata=self._metadata, timeout=self._timeout
            )
            chunks = list(stream)
        except grpc.RpcError as exc:
            raise AdminCallError(exc.code(), exc.details() or "") from exc
        if not chunks or chunks[0].WhichOneof("kind") != "header":
            raise AdminCallError(grpc.StatusCode.DATA_LOSS, "the model stream did not start with a header")
        return chunks[0].header, b"".join(chunk.data for chunk in chunks[1:])
