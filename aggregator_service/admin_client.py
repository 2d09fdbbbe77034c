"""The Admin service's client transport: a channel with the right credentials, typed calls, readable errors.

Protobuf stays inside: requests and replies go through ``fedmedclip.federation.serde``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from aggregator_service.settings import AggregatorSettings, ConfigError, is_loopback
from fedmedclip.federation import messages as m
from fedmedclip.federation import serde
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.rpc.v1 import admin_pb2_grpc

DEFAULT_TIMEOUT_S = 30.0
_Reply = TypeVar("_Reply")


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
    """The Admin service's calls as typed methods, with the admin credential attached.

    Takes and returns ``fedmedclip.federation.messages`` values; raises ``AdminCallError`` on failure.
    """

    def __init__(self, channel: grpc.Channel, admin_token: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._stub = admin_pb2_grpc.AdminStub(channel)
        self._metadata = (("authorization", f"Bearer {admin_token}"),)
        self._timeout = timeout_s

    def start_run(self, config: RunConfig, name: str = "", initial_version: int = 0) -> m.StartRunReply:
        request = serde.start_run_request_to_proto(m.StartRunRequest(config, name, initial_version))
        return self._call(self._stub.StartRun, request, serde.start_run_reply_from_proto)

    def stop_run(self, run_id: str, reason: str = "") -> m.RunState:
        request = serde.stop_run_request_to_proto(m.StopRunRequest(run_id, reason))
        return self._call(self._stub.StopRun, request, serde.stop_run_reply_from_proto).state

    def list_runs(self) -> list[m.RunStatus]:
        """Every run, newest first, without its rounds."""
        request = serde.list_runs_request_to_proto(m.ListRunsRequest())
        return list(self._call(self._stub.ListRuns, request, serde.list_runs_reply_from_proto).runs)

    def run_status(self, run_id: str = "") -> m.RunStatus:
        """A run with its rounds; ``""``: the most recent run."""
        request = serde.get_run_status_request_to_proto(m.GetRunStatusRequest(run_id))
        return self._call(self._stub.GetRunStatus, request, serde.run_status_from_proto)

    def list_versions(self, run_id: str) -> list[m.FamVersion]:
        """Every version of the run, oldest first, following the server's pages."""
        versions: list[m.FamVersion] = []
        token = ""
        while True:
            request = serde.list_versions_request_to_proto(m.ListVersionsRequest(run_id, page_token=token))
            reply = self._call(self._stub.ListVersions, request, serde.list_versions_reply_from_proto)
            versions.extend(reply.versions)
            if not reply.next_page_token or reply.next_page_token == token:
                return versions
            token = reply.next_page_token

    def export_version(self, version: int) -> tuple[m.ModelHeader, bytes]:
        """A FAM version's header and all its bytes (the caller verifies the sha256)."""
        request = serde.export_version_request_to_proto(m.ExportVersionRequest(version))
        try:
            chunks = [serde.model_chunk_from_proto(c) for c in self._stub.ExportVersion(request, **self._options())]
        except grpc.RpcError as exc:
            raise AdminCallError(exc.code(), exc.details() or "") from exc
        except ValueError as exc:
            raise AdminCallError(grpc.StatusCode.DATA_LOSS, f"the model stream is malformed: {exc}") from exc
        header = chunks[0] if chunks else None
        if not isinstance(header, m.ModelHeader):
            raise AdminCallError(grpc.StatusCode.DATA_LOSS, "the model stream did not start with a header")
        data = [c for c in chunks[1:] if isinstance(c, bytes)]
        if len(data) != len(chunks) - 1:
            raise AdminCallError(grpc.StatusCode.DATA_LOSS, "the model stream repeated its header")
        return header, b"".join(data)

    def enrol_site(self, name: str, description: str = "", max_samples: int | None = None) -> m.EnrolSiteReply:
        """Enrol a site; the reply holds its token, which is shown only this once."""
        request = serde.enrol_site_request_to_proto(m.EnrolSiteRequest(name, description, max_samples))
        return self._call(self._stub.EnrolSite, request, serde.enrol_site_reply_from_proto)

    def list_sites(self) -> list[m.Site]:
        """Every enrolled site, by name, following the server's pages."""
        sites: list[m.Site] = []
        token = ""
        while True:
            request = serde.list_sites_request_to_proto(m.ListSitesRequest(page_token=token))
            reply = self._call(self._stub.ListSites, request, serde.list_sites_reply_from_proto)
            sites.extend(reply.sites)
            if not reply.next_page_token or reply.next_page_token == token:
                return sites
            token = reply.next_page_token

    def revoke_site(self, name: str, reason: str = "") -> m.Site:
        request = serde.revoke_site_request_to_proto(m.RevokeSiteRequest(name, reason))
        return self._call(self._stub.RevokeSite, request, serde.revoke_site_reply_from_proto).site

    def rotate_site_token(self, name: str, grace_s: float | None = None) -> m.RotateSiteTokenReply:
        """A new token for the site (shown only this once); the old one works ``grace_s`` more seconds."""
        request = serde.rotate_site_token_request_to_proto(m.RotateSiteTokenRequest(name, grace_s))
        return self._call(self._stub.RotateSiteToken, request, serde.rotate_site_token_reply_from_proto)

    def _options(self) -> dict[str, Any]:
        return {"metadata": self._metadata, "timeout": self._timeout}

    def _call(self, method: Any, request: Any, read: Callable[[Any], _Reply]) -> _Reply:
        try:
            reply = method(request, **self._options())
        except grpc.RpcError as exc:
            raise AdminCallError(exc.code(), exc.details() or "") from exc
        try:
            return read(reply)
        except ValueError as exc:  # e.g. an enum value from a newer aggregator
            raise AdminCallError(grpc.StatusCode.DATA_LOSS, f"cannot read the aggregator's reply: {exc}") from exc
