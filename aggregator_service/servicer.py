"""gRPC transport: credentials from metadata, protobuf ↔ plain values, errors → status codes. No logic.

Deny by default: every method starts by authenticating its caller (a site token on Federation, the admin
credential on Admin) inside ``_rpc``, which is also the one place where a ``ServiceError`` becomes a status
code and a refusal is written to the audit log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from aggregator_service import admin as admin_handlers
from aggregator_service import handlers
from aggregator_service.auth import bearer_token
from aggregator_service.context import Services
from aggregator_service.errors import InvalidArgument, ServiceError
from aggregator_service.store.base import RoundState, RunRecord, RunState, SiteRecord, VersionRecord
from fedmedclip.federation import serde
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.rpc.v1 import admin_pb2, admin_pb2_grpc, common_pb2, federation_pb2, federation_pb2_grpc

log = logging.getLogger("aggregator_service.servicer")


@dataclass
class _Call:
    """Who is calling and what about; filled in as the method learns it, for the audit of a refusal."""

    svc: Services
    context: grpc.ServicerContext
    actor: str = ""
    site_name: str | None = None
    run_id: str | None = None
    round: int | None = None

    def site(self) -> SiteRecord:
        site = handlers.authenticate_site(self.svc, bearer_token(self.context.invocation_metadata()))
        self.actor = self.site_name = site.name
        return site

    def admin(self) -> None:
        handlers.authenticate_admin(self.svc, bearer_token(self.context.invocation_metadata()))
        self.actor = handlers.ADMIN


class _Rpc:
    """One call: yields a ``_Call``; on a ``ServiceError`` records the refusal and aborts with its code.

    ``__exit__`` returns ``None``: it never swallows an exception (``context.abort`` raises), which is
    also what lets type checkers see that the ``with`` body's ``return`` is the method's only exit.
    """

    def __init__(self, svc: Services, method: str, context: grpc.ServicerContext) -> None:
        self.method = method
        self.call = _Call(svc, context, actor=f"anonymous {context.peer()}")

    def __enter__(self) -> _Call:
        return self.call

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _tb: TracebackType | None
    ) -> None:
        call, method = self.call, self.method
        metrics = call.svc.metrics.rpcs
        if error is None:
            metrics.labels(method, "OK").inc()
        elif isinstance(error, ServiceError):
            metrics.labels(method, error.code).inc()
            handlers.record_refusal(call.svc, method, call.actor, error, call.run_id, call.round, call.site_name)
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

    def _model_chunks(self, blob: handlers.ModelBlob) -> Iterator[common_pb2.ModelChunk]:
        header = common_pb2.ModelHeader(
            version=blob.version,
            sha256=blob.sha256,
            total_bytes=len(blob.data),
            format=common_pb2.MODEL_FORMAT_SAFETENSORS,
        )
        yield common_pb2.ModelChunk(header=header)
        step = self.svc.limits.chunk_bytes
        view = memoryview(blob.data)
        for start in range(0, len(blob.data), step):
            yield common_pb2.ModelChunk(data=bytes(view[start : start + step]))
        self.svc.metrics.model_bytes.inc(len(blob.data))


class FederationServicer(_Transport, federation_pb2_grpc.FederationServicer):
    def Join(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.JoinRequest, context: grpc.ServicerContext
    ) -> federation_pb2.JoinResponse:
        with self._rpc("Join", context) as call:
            site = call.site()
            info = {
                "platform": request.site_info.platform,
                "torch_version": request.site_info.torch_version,
                "device": request.site_info.device,
            }
            result = handlers.join(
                self.svc,
                site,
                (request.protocol_major, request.protocol_minor),
                request.software_version,
                info,
            )
            response = federation_pb2.JoinResponse(
                site=result.site,
                run_id=result.run_id,
                protocol_major=result.protocol[0],
                protocol_minor=result.protocol[1],
            )
            if result.config is not None:
                response.run_config.CopyFrom(serde.run_config_to_proto(result.config))
            return response

    def PollTask(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.PollTaskRequest, context: grpc.ServicerContext
    ) -> federation_pb2.Task:
        with self._rpc("PollTask", context) as call:
            site = call.site()
            call.run_id = request.run_id
            task = handlers.poll_task(self.svc, site, request.run_id, float(request.wait_seconds))
            if isinstance(task, handlers.TrainTask):
                train = federation_pb2.TrainTask(
                    round=task.round, fam_version=task.fam_version, deadline=_timestamp(task.deadline)
                )
                return federation_pb2.Task(train=train)
            if isinstance(task, handlers.DoneTask):
                return federation_pb2.Task(
                    done=federation_pb2.DoneTask(final_version=task.final_version, reason=task.reason)
                )
            return federation_pb2.Task(wait=federation_pb2.WaitTask(retry_after_seconds=task.retry_after_s))

    def GetModel(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.ModelChunk]:
        with self._rpc("GetModel", context) as call:
            call.site()
            yield from self._model_chunks(handlers.get_model(self.svc, request.version))

    def SubmitUpdate(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterator[federation_pb2.UpdateChunk], context: grpc.ServicerContext
    ) -> federation_pb2.SubmitUpdateResponse:
        with self._rpc("SubmitUpdate", context) as call:
            site = call.site()
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("kind") != "header":
                raise InvalidArgument("the first message of an upload must be its header")
            call.run_id, call.round = first.header.run_id, first.header.round
            header = _update_header(first.header)
            result = handlers.submit_update(self.svc, site, header, _data_chunks(request_iterator))
            return federation_pb2.SubmitUpdateResponse(
                accepted=result.accepted, duplicate=result.duplicate, message=result.message
            )

    def Heartbeat(  # noqa: N802 - gRPC method name
        self, request: federation_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> federation_pb2.HeartbeatResponse:
        with self._rpc("Heartbeat", context) as call:
            site = call.site()
            call.run_id, call.round = request.run_id or None, request.round or None
            result = handlers.heartbeat(self.svc, site, request.run_id, request.round)
            return federation_pb2.HeartbeatResponse(
                server_time=_timestamp(result.server_time), abandon_round=result.abandon_round
            )


class AdminServicer(_Transport, admin_pb2_grpc.AdminServicer):
    def StartRun(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.StartRunRequest, context: grpc.ServicerContext
    ) -> admin_pb2.StartRunResponse:
        with self._rpc("StartRun", context) as call:
            call.admin()
            try:
                config = serde.run_config_from_proto(request.config)
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            started = admin_handlers.start_run(self.svc, config, request.name, request.initial_version)
            return admin_pb2.StartRunResponse(run_id=started.run.id, initial_version=started.initial_version)

    def StopRun(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.StopRunRequest, context: grpc.ServicerContext
    ) -> admin_pb2.StopRunResponse:
        with self._rpc("StopRun", context) as call:
            call.admin()
            call.run_id = request.run_id
            run = admin_handlers.stop_run(self.svc, request.run_id, request.reason)
            return admin_pb2.StopRunResponse(state=_run_state(run))

    def ListRuns(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListRunsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListRunsResponse:
        with self._rpc("ListRuns", context) as call:
            call.admin()
            return admin_pb2.ListRunsResponse(runs=[_run_status(run) for run in admin_handlers.list_runs(self.svc)])

    def GetRunStatus(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.GetRunStatusRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RunStatus:
        with self._rpc("GetRunStatus", context) as call:
            call.admin()
            status = admin_handlers.run_status(self.svc, request.run_id)
            message = _run_status(status.run)
            for item in status.rounds:
                message.rounds.append(_round_status(item))
            return message

    def ListVersions(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListVersionsRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListVersionsResponse:
        with self._rpc("ListVersions", context) as call:
            call.admin()
            versions = admin_handlers.list_versions(self.svc, request.run_id)
            return admin_pb2.ListVersionsResponse(versions=[_fam_version(v) for v in versions])

    def ExportVersion(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ExportVersionRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.ModelChunk]:
        with self._rpc("ExportVersion", context) as call:
            call.admin()
            yield from self._model_chunks(admin_handlers.export_version(self.svc, request.version))

    def EnrolSite(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.EnrolSiteRequest, context: grpc.ServicerContext
    ) -> admin_pb2.EnrolSiteResponse:
        with self._rpc("EnrolSite", context) as call:
            call.admin()
            call.site_name = request.site
            site, token = admin_handlers.enrol_site(self.svc, request.site, request.description)
            return admin_pb2.EnrolSiteResponse(site=_site(site), token=token)

    def ListSites(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.ListSitesRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListSitesResponse:
        with self._rpc("ListSites", context) as call:
            call.admin()
            return admin_pb2.ListSitesResponse(sites=[_site(site) for site in admin_handlers.list_sites(self.svc)])

    def RevokeSite(  # noqa: N802 - gRPC method name
        self, request: admin_pb2.RevokeSiteRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RevokeSiteResponse:
        with self._rpc("RevokeSite", context) as call:
            call.admin()
            call.site_name = request.site
            return admin_pb2.RevokeSiteResponse(
                site=_site(admin_handlers.revoke_site(self.svc, request.site, request.reason))
            )


# --- protobuf ↔ plain values --------------------------------------------------------------------------


def _data_chunks(messages: Iterator[federation_pb2.UpdateChunk]) -> Iterator[bytes]:
    for message in messages:
        if message.WhichOneof("kind") != "data":
            raise InvalidArgument("an upload has exactly one header, as its first message")
        yield message.data


def _update_header(message: federation_pb2.UpdateHeader) -> handlers.UpdateHeader:
    try:
        codec = serde.codec_config_from_proto(message.codec) if message.HasField("codec") else None
    except ValueError as exc:
        raise InvalidArgument(f"header codec: {exc}") from exc
    return handlers.UpdateHeader(
        run_id=message.run_id,
        round=message.round,
        base_version=message.base_version,
        num_samples=message.num_samples,
        metrics=dict(message.metrics),
        codec=codec,
        sha256=message.sha256.strip().lower(),
        total_bytes=message.total_bytes,
        claimed_site=message.site,
    )


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


_RUN_STATES = {
    RunState.RUNNING: admin_pb2.RUN_STATE_RUNNING,
    RunState.COMPLETED: admin_pb2.RUN_STATE_COMPLETED,
    RunState.STOPPED: admin_pb2.RUN_STATE_STOPPED,
    RunState.FAILED: admin_pb2.RUN_STATE_FAILED,
}
_ROUND_STATES = {
    RoundState.OPEN: admin_pb2.ROUND_STATE_OPEN,
    RoundState.AGGREGATING: admin_pb2.ROUND_STATE_AGGREGATING,
    RoundState.CLOSED: admin_pb2.ROUND_STATE_CLOSED,
    RoundState.ABANDONED: admin_pb2.ROUND_STATE_ABANDONED,
}
_PARTICIPATION = {
    "ACCEPTED": admin_pb2.PARTICIPATION_STATE_ACCEPTED,
    "REJECTED": admin_pb2.PARTICIPATION_STATE_REJECTED,
    "MISSING": admin_pb2.PARTICIPATION_STATE_MISSING,
}


def _run_state(run: RunRecord) -> admin_pb2.RunState:
    return _RUN_STATES[run.state]


def _run_status(run: RunRecord) -> admin_pb2.RunStatus:
    message = admin_pb2.RunStatus(
        run_id=run.id,
        name=run.name,
        state=_run_state(run),
        config=serde.run_config_to_proto(RunConfig.from_dict(run.config)),
        current_round=run.current_round,
        latest_version=run.latest_version,
        created_at=_timestamp(run.created_at),
        message=run.message,
    )
    if run.finished_at is not None:
        message.finished_at.CopyFrom(_timestamp(run.finished_at))
    return message


def _round_status(item: admin_handlers.RoundStatus) -> admin_pb2.RoundStatus:
    record = item.round
    message = admin_pb2.RoundStatus(
        round=record.number,
        state=_ROUND_STATES[record.state],
        opened_at=_timestamp(record.opened_at),
        deadline=_timestamp(record.deadline),
        input_version=record.input_version,
        output_version=record.output_version or 0,
        metrics=dict(item.metrics),
    )
    if record.closed_at is not None:
        message.closed_at.CopyFrom(_timestamp(record.closed_at))
    for part in item.participants:
        entry = admin_pb2.SiteParticipation(
            site=part.site,
            state=_PARTICIPATION[part.state],
            num_samples=part.num_samples,
            payload_bytes=part.payload_bytes,
            metrics=dict(part.metrics),
            message=part.message,
        )
        if part.received_at is not None:
            entry.received_at.CopyFrom(_timestamp(part.received_at))
        message.participants.append(entry)
    return message


def _fam_version(record: VersionRecord) -> admin_pb2.FamVersion:
    return admin_pb2.FamVersion(
        version=record.version,
        run_id=record.run_id,
        round=record.round,
        parent_version=record.parent_version or 0,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        format=common_pb2.MODEL_FORMAT_SAFETENSORS,
        created_at=_timestamp(record.created_at),
        contributions=[
            admin_pb2.VersionContribution(site=c.site, num_samples=c.num_samples, payload_bytes=c.payload_bytes)
            for c in record.contributions
        ],
    )


def _site(site: SiteRecord) -> admin_pb2.Site:
    message = admin_pb2.Site(
        name=site.name,
        description=site.description,
        enabled=site.enabled,
        enrolled_at=_timestamp(site.enrolled_at),
        software_version=site.software_version,
        site_info=common_pb2.SiteInfo(
            platform=site.site_info.get("platform", ""),
            torch_version=site.site_info.get("torch_version", ""),
            device=site.site_info.get("device", ""),
        ),
    )
    if site.last_seen is not None:
        message.last_seen.CopyFrom(_timestamp(site.last_seen))
    return message
