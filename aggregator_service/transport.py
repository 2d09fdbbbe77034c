"""The aggregator's gRPC transport: credentials from metadata, protobuf ↔ messages (through ``serde``),
errors → status codes, and the services' registration on a server. No logic: each method calls one handler.
With ``serde`` and the clients' transports (``admin_client``, ``hospital_agent.client``) it is the only code
that touches protobuf (docs/design.md §2).

Deny by default: every method starts by authenticating its caller (a site token on Federation, the admin
credential on Admin) inside ``_rpc``, which is also the one place where a ``ServiceError`` becomes a status
code and a refusal is written to the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from aggregator_service import admin_handlers, federation_handlers, secure_handlers
from aggregator_service.audit import ADMIN, record_refusal
from aggregator_service.auth import authenticate_admin, authenticate_site, bearer_token
from aggregator_service.context import Services
from aggregator_service.errors import InvalidArgument, ResourceExhausted, ServiceError, Unavailable
from aggregator_service.federation_handlers import ModelBlob
from aggregator_service.leadership import NOT_LEADER
from aggregator_service.site_limits import CALL, DOWNLOAD, UPLOAD
from aggregator_service.store.base import SiteRecord
from fedmedclip.federation import messages as m
from fedmedclip.federation import serde
from fedmedclip.rpc.v1 import admin_pb2, admin_pb2_grpc, common_pb2, federation_pb2, federation_pb2_grpc

log = logging.getLogger("aggregator_service.transport")

RETRY_AFTER_MS = "retry-after-ms"  # trailing metadata of a RESOURCE_EXHAUSTED refusal: when to try again

SERVICE_NAMES = (
    federation_pb2.DESCRIPTOR.services_by_name["Federation"].full_name,
    admin_pb2.DESCRIPTOR.services_by_name["Admin"].full_name,
)


@dataclass
class _Call:
    """Who is calling and what about; filled in as the method learns it, for the audit of a refusal."""

    svc: Services
    context: grpc.ServicerContext
    actor: str = ""
    site_name: str | None = None
    run_id: str | None = None
    round: int | None = None
    slots: ExitStack = field(default_factory=ExitStack)

    def site(self, request: Message | None = None, stream: str | None = None) -> SiteRecord:
        """Authenticate the site, check ``request``'s integers, and take the site's call (and stream) slot."""
        site = authenticate_site(self.svc, bearer_token(self.context.invocation_metadata()))
        self.actor = self.site_name = site.name
        if request is not None:
            self.check(request)
        self.slots.enter_context(self.svc.site_slots.hold(site.name, CALL))
        if stream is not None:
            self.slots.enter_context(self.svc.site_slots.hold(site.name, stream))
        return site

    def check(self, request: Message) -> None:
        """Refuse integers that do not fit where they go (docs/design.md §6) with INVALID_ARGUMENT."""
        try:
            serde.check_int_ranges(request)
        except serde.FieldOutOfRangeError as exc:
            raise InvalidArgument(str(exc)) from exc

    def admin(self, request: Message | None = None) -> None:
        authenticate_admin(self.svc, bearer_token(self.context.invocation_metadata()))
        self.actor = ADMIN
        if request is not None:
            self.check(request)


class _Rpc:
    """One call: yields a ``_Call``; on a ``ServiceError`` records the refusal and aborts with its code.

    ``__exit__`` returns ``None``: it never swallows an exception (``context.abort`` raises), which is
    also what lets type checkers see that the ``with`` body's ``return`` is the method's only exit.
    """

    def __init__(self, svc: Services, method: str, context: grpc.ServicerContext) -> None:
        self.method = method
        self.call = _Call(svc, context, actor=f"anonymous {context.peer()}")

    def __enter__(self) -> _Call:
        call = self.call
        if not call.svc.leading.is_set():  # a standby: the client's retry moves on to another address
            call.svc.metrics.rpcs.labels(self.method, "UNAVAILABLE").inc()
            call.context.abort(grpc.StatusCode.UNAVAILABLE, NOT_LEADER)
        return call

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: TracebackType | None
    ) -> None:
        call, method = self.call, self.method
        call.slots.close()
        metrics = call.svc.metrics.rpcs
        if error is None:
            metrics.labels(method, "OK").inc()
        elif isinstance(error, Unavailable):  # deposed or database busy: nothing to audit, the client retries
            metrics.labels(method, error.code).inc()
            call.context.abort(grpc.StatusCode.UNAVAILABLE, error.message)
        elif isinstance(error, ServiceError):
            metrics.labels(method, error.code).inc()
            record_refusal(call.svc, method, call.actor, error, call.run_id, call.round, call.site_name)
            if isinstance(error, ResourceExhausted):  # the hint the agent's client honours
                call.context.set_trailing_metadata(((RETRY_AFTER_MS, str(int(error.retry_after_s * 1000))),))
            call.context.abort(getattr(grpc.StatusCode, error.code), error.message)
        elif isinstance(error, grpc.RpcError):  # the client went away mid-stream; nothing to answer
            metrics.labels(method, "CANCELLED").inc()
        elif isinstance(error, Exception):
            metrics.labels(method, "INTERNAL").inc()
            log.error("%s failed", method, exc_info=(kind or type(error), error, _tb))
            call.context.abort(grpc.StatusCode.INTERNAL, "internal error; the aggregator's log has the details")


class _Transport:
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def _rpc(self, method: str, context: grpc.ServicerContext) -> _Rpc:
        return _Rpc(self.svc, method, context)

    def _model_chunks(self, blob: ModelBlob, context: grpc.ServicerContext) -> Iterator[common_pb2.ModelChunk]:
        chunks = serde.model_chunks_to_proto(blob.header, blob.data, self.svc.limits.chunk_bytes)
        yield from self.svc.idle_watch.watch(chunks, context.cancel, client_sends=False)
        self.svc.metrics.model_bytes.inc(len(blob.data))


class FederationServicer(_Transport, federation_pb2_grpc.FederationServicer):
    def Join(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.JoinRequest, context: grpc.ServicerContext
    ) -> federation_pb2.JoinResponse:
        with self._rpc("Join", context) as call:
            site = call.site(request)
            reply = federation_handlers.join(self.svc, site, serde.join_request_from_proto(request))
            return serde.join_reply_to_proto(reply)

    def PollTask(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.PollTaskRequest, context: grpc.ServicerContext
    ) -> federation_pb2.Task:
        with self._rpc("PollTask", context) as call:
            site = call.site(request)
            call.run_id = request.run_id
            task = federation_handlers.poll_task(self.svc, site, serde.poll_request_from_proto(request))
            return serde.task_to_proto(task)

    def GetModel(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.ModelChunk]:
        with self._rpc("GetModel", context) as call:
            call.site(request, DOWNLOAD)
            version = serde.get_model_request_from_proto(request).version
            yield from self._model_chunks(federation_handlers.get_model(self.svc, version), context)

    def SubmitUpdate(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[federation_pb2.UpdateChunk], context: grpc.ServicerContext
    ) -> federation_pb2.SubmitUpdateResponse:
        with self._rpc("SubmitUpdate", context) as call:
            site = call.site(stream=UPLOAD)
            messages = self.svc.idle_watch.watch(request_iterator, context.cancel)
            call.slots.callback(messages.close)  # stop watching once the call is over, however it ends
            first = next(messages, None)
            if first is None or serde.update_chunk_kind(first) != "header":
                raise InvalidArgument("the first message of an upload must be its header")
            call.check(first)
            call.run_id, call.round = first.header.run_id, first.header.round
            try:
                header = serde.update_header_from_proto(first.header)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            reply = federation_handlers.submit_update(self.svc, site, header, _data_chunks(messages))
            return serde.submit_reply_to_proto(reply)

    def Heartbeat(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> federation_pb2.HeartbeatResponse:
        with self._rpc("Heartbeat", context) as call:
            site = call.site(request)
            call.run_id, call.round = request.run_id or None, request.round or None
            reply = federation_handlers.heartbeat(self.svc, site, serde.heartbeat_request_from_proto(request))
            return serde.heartbeat_reply_to_proto(reply)

    # --- secure rounds (docs/design.md §4.6) ---------------------------------------------------------------

    def AdvertiseKeys(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.AdvertiseKeysRequest, context: grpc.ServicerContext
    ) -> federation_pb2.SecurePhaseResponse:
        with self._rpc("AdvertiseKeys", context) as call:
            site = call.site(request)
            call.run_id, call.round = request.run_id, request.round
            reply = secure_handlers.advertise_keys(self.svc, site, serde.advertise_keys_request_from_proto(request))
            return serde.secure_reply_to_proto(reply)

    def ShareKeys(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.ShareKeysRequest, context: grpc.ServicerContext
    ) -> federation_pb2.SecurePhaseResponse:
        with self._rpc("ShareKeys", context) as call:
            site = call.site(request)
            call.run_id, call.round = request.run_id, request.round
            reply = secure_handlers.share_keys(self.svc, site, serde.share_keys_request_from_proto(request))
            return serde.secure_reply_to_proto(reply)

    def SubmitMaskedInput(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[federation_pb2.MaskedInputChunk], context: grpc.ServicerContext
    ) -> federation_pb2.SecurePhaseResponse:
        with self._rpc("SubmitMaskedInput", context) as call:
            site = call.site(stream=UPLOAD)
            messages = self.svc.idle_watch.watch(request_iterator, context.cancel)
            call.slots.callback(messages.close)  # stop watching once the call is over, however it ends
            message = next(messages, federation_pb2.MaskedInputChunk())
            call.check(message)
            first = serde.masked_input_chunk_from_proto(message)
            if not isinstance(first, m.MaskedInputHeader):
                raise InvalidArgument("the first message of a masked input must be its header")
            call.run_id, call.round = first.run_id, first.round
            reply = secure_handlers.submit_masked_input(self.svc, site, first, _masked_chunks(messages))
            return serde.secure_reply_to_proto(reply)

    def Unmask(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.UnmaskRequest, context: grpc.ServicerContext
    ) -> federation_pb2.SecurePhaseResponse:
        with self._rpc("Unmask", context) as call:
            site = call.site(request)
            call.run_id, call.round = request.run_id, request.round
            try:
                unmask = serde.unmask_request_from_proto(request)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            return serde.secure_reply_to_proto(secure_handlers.unmask(self.svc, site, unmask))


class AdminServicer(_Transport, admin_pb2_grpc.AdminServicer):
    def StartRun(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.StartRunRequest, context: grpc.ServicerContext
    ) -> admin_pb2.StartRunResponse:
        with self._rpc("StartRun", context) as call:
            call.admin(request)
            try:
                start = serde.start_run_request_from_proto(request)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            return serde.start_run_reply_to_proto(admin_handlers.start_run(self.svc, start))

    def StopRun(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.StopRunRequest, context: grpc.ServicerContext
    ) -> admin_pb2.StopRunResponse:
        with self._rpc("StopRun", context) as call:
            call.admin(request)
            call.run_id = request.run_id
            stop = serde.stop_run_request_from_proto(request)
            state = admin_handlers.stop_run(self.svc, stop.run_id, stop.reason)
            return serde.stop_run_reply_to_proto(m.StopRunReply(state))

    def ListRuns(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListRunsResponse:
        with self._rpc("ListRuns", context) as call:
            call.admin(request)
            return serde.list_runs_reply_to_proto(m.ListRunsReply(tuple(admin_handlers.list_runs(self.svc))))

    def GetRunStatus(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.GetRunStatusRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RunStatus:
        with self._rpc("GetRunStatus", context) as call:
            call.admin(request)
            run_id = serde.get_run_status_request_from_proto(request).run_id
            return serde.run_status_to_proto(admin_handlers.run_status(self.svc, run_id))

    def ListVersions(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListVersionsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListVersionsResponse:
        with self._rpc("ListVersions", context) as call:
            call.admin(request)
            listing = serde.list_versions_request_from_proto(request)
            return serde.list_versions_reply_to_proto(admin_handlers.list_versions(self.svc, listing))

    def ExportVersion(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ExportVersionRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.ModelChunk]:
        with self._rpc("ExportVersion", context) as call:
            call.admin(request)
            version = serde.export_version_request_from_proto(request).version
            yield from self._model_chunks(admin_handlers.export_version(self.svc, version), context)

    def EnrolSite(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.EnrolSiteRequest, context: grpc.ServicerContext
    ) -> admin_pb2.EnrolSiteResponse:
        with self._rpc("EnrolSite", context) as call:
            call.admin(request)
            call.site_name = request.site
            try:
                enrol = serde.enrol_site_request_from_proto(request)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            reply = admin_handlers.enrol_site(self.svc, enrol.site, enrol.description, enrol.max_samples)
            return serde.enrol_site_reply_to_proto(reply)

    def ListSites(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListSitesRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListSitesResponse:
        with self._rpc("ListSites", context) as call:
            call.admin(request)
            listing = serde.list_sites_request_from_proto(request)
            return serde.list_sites_reply_to_proto(admin_handlers.list_sites(self.svc, listing))

    def RevokeSite(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.RevokeSiteRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeSiteResponse:
        with self._rpc("RevokeSite", context) as call:
            call.admin(request)
            call.site_name = request.site
            revoke = serde.revoke_site_request_from_proto(request)
            site = admin_handlers.revoke_site(self.svc, revoke.site, revoke.reason)
            return serde.revoke_site_reply_to_proto(m.RevokeSiteReply(site))

    def RotateSiteToken(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.RotateSiteTokenRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RotateSiteTokenResponse:
        with self._rpc("RotateSiteToken", context) as call:
            call.admin(request)
            call.site_name = request.site
            try:
                rotate = serde.rotate_site_token_request_from_proto(request)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            reply = admin_handlers.rotate_site_token(self.svc, rotate.site, rotate.grace_s)
            return serde.rotate_site_token_reply_to_proto(reply)


def _data_chunks(messages: Iterator[federation_pb2.UpdateChunk]) -> Iterator[bytes]:
    for message in messages:
        if serde.update_chunk_kind(message) != "data":
            raise InvalidArgument("an upload has exactly one header, as its first message")
        yield serde.update_chunk_data(message)


def _masked_chunks(messages: Iterator[federation_pb2.MaskedInputChunk]) -> Iterator[bytes]:
    for message in messages:
        chunk = serde.masked_input_chunk_from_proto(message)
        if not isinstance(chunk, bytes):
            raise InvalidArgument("a masked input has exactly one header, as its first message")
        yield chunk


# --- the server -----------------------------------------------------------------------------------------


def add_services(server: grpc.Server, svc: Services) -> health.HealthServicer:
    """Register Federation, Admin and the standard health service; the caller marks them serving."""
    federation_pb2_grpc.add_FederationServicer_to_server(FederationServicer(svc), server)
    admin_pb2_grpc.add_AdminServicer_to_server(AdminServicer(svc), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return health_servicer


def set_health(health_servicer: health.HealthServicer, serving: bool) -> None:
    """Mark the server and each of its services SERVING or NOT_SERVING."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, status)
