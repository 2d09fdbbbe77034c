"""The agent's gRPC client of the aggregator's Federation service.

- Transport: TLS by default (system roots, or ``tls.ca_file``), mutual TLS with ``tls.cert_file``/``key_file``,
  plaintext only to a loopback aggregator with ``insecure_loopback`` (the settings enforce it). Explicit
  message size limits both ways; keepalive pings every 30 s (the aggregator refuses more often than 20 s).
- Every call carries ``authorization: Bearer <token>``.
- Retries: only ``UNAVAILABLE`` (aggregator down, restarting, network blip), ``DEADLINE_EXCEEDED`` for
  idempotent calls, with capped exponential backoff and jitter, and ``RESOURCE_EXHAUSTED`` that carries the
  aggregator's ``retry-after-ms`` hint (a per-site limit: wait as told), for as long as it takes (the agent
  is a service: it outlives aggregator outages). Every call the agent makes is idempotent by the protocol:
  ``SubmitUpdate`` of the same bytes is acknowledged as a duplicate. Anything else raises ``AggregatorError``.
- Failover: ``aggregator`` may list several addresses (active/standby aggregators, docs/design.md §4.7).
  A call that fails with a retryable status moves to the next address before its retry; a standby answers
  UNAVAILABLE, so the agent settles on the leader. Backoff grows once per pass over the whole list.
- Waiting (backoff, an in-flight unary call) ends at once when ``stop`` is set: SIGTERM is never held up
  by a long poll.

Protobuf messages are built and read by ``fedmedclip.federation.serde``; this module only moves them.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import grpc

from fedmedclip import PROTOCOL_VERSION, __version__
from fedmedclip.federation import messages as m
from fedmedclip.federation import serde
from fedmedclip.logs import event
from fedmedclip.rpc.v1 import federation_pb2_grpc
from hospital_agent.settings import AgentSettings

log = logging.getLogger("hospital_agent.client")
KEEPALIVE_MS = 30_000
# Tests record every outgoing message through these; production passes none.
Interceptor: TypeAlias = (
    grpc.UnaryUnaryClientInterceptor | grpc.UnaryStreamClientInterceptor | grpc.StreamUnaryClientInterceptor
)
_T = TypeVar("_T")


class AgentStopped(Exception):  # noqa: N818 - a signal to unwind, not an error
    """``stop`` was set while waiting: unwind and shut down."""


class AggregatorError(Exception):
    """A call failed with a status that retrying cannot fix; ``code`` is the gRPC status name."""

    def __init__(self, method: str, code: str, details: str) -> None:
        self.method = method
        self.code = code
        self.details = details
        super().__init__(f"{method} failed: {code}: {details}")


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with "equal jitter": half the delay fixed, half random."""

    initial_s: float = 1.0
    max_s: float = 60.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_s, self.initial_s * self.multiplier ** max(0, attempt))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def channel_options(settings: AgentSettings) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.enable_retries", 0),  # retries are ours (above), so that they are visible in the logs
        ("grpc.initial_reconnect_backoff_ms", int(settings.backoff_initial_s * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(settings.backoff_max_s * 1000)),
    ]
    if settings.tls.server_name:
        options.append(("grpc.ssl_target_name_override", settings.tls.server_name))
    return options


def open_channel(settings: AgentSettings, target: str | None = None) -> grpc.Channel:
    """A channel to ``target`` (default: the first aggregator address)."""
    target = target or settings.aggregators[0]
    if settings.insecure_loopback:
        return grpc.insecure_channel(target, options=channel_options(settings))
    tls = settings.tls
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls.ca_file.read_bytes() if tls.ca_file else None,
        private_key=tls.key_file.read_bytes() if tls.key_file else None,
        certificate_chain=tls.cert_file.read_bytes() if tls.cert_file else None,
    )
    return grpc.secure_channel(target, credentials, options=channel_options(settings))


class FederationClient:
    """Join, PollTask, GetModel, SubmitUpdate and Heartbeat with the retry policy above."""

    def __init__(
        self,
        settings: AgentSettings,
        token: str,
        stop: threading.Event,
        *,
        interceptors: Sequence[Interceptor] = (),
        channel: grpc.Channel | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._interceptors = tuple(interceptors)
        # One channel per address, opened when first used; a given channel means that one address only.
        self._targets: tuple[str, ...] = settings.aggregators if channel is None else ("(given channel)",)
        self._channels: dict[int, grpc.Channel] = {} if channel is None else {0: channel}
        self._index = 0
        self._stub = self._stub_for(0)
        self._timeout = settings.rpc_timeout_s

    @property
    def target(self) -> str:
        """The aggregator address calls go to now."""
        return self._targets[self._index]

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    def _stub_for(self, index: int) -> federation_pb2_grpc.FederationStub:
        channel = self._channels.get(index)
        if channel is None:
            channel = self._channels[index] = open_channel(self.settings, self._targets[index])
        return federation_pb2_grpc.FederationStub(grpc.intercept_channel(channel, *self._interceptors))

    def _next_address(self, method: str, code: grpc.StatusCode) -> None:
        """Move to the next aggregator address (a no-op with one address)."""
        if len(self._targets) < 2:
            return
        previous = self.target
        self._index = (self._index + 1) % len(self._targets)
        self._stub = self._stub_for(self._index)
        event(
            log,
            "trying the next aggregator address",
            method=method,
            code=code.name,
            previous=previous,
            next=self.target,
        )

    # --- calls ------------------------------------------------------------------------------------------

    def join(self, device: str = "", platform: str = "", torch_version: str = "") -> m.JoinReply:
        info = m.SiteInfo(platform=platform, torch_version=torch_version, device=device)
        request = serde.join_request_to_proto(m.JoinRequest(PROTOCOL_VERSION, __version__, info))
        reply = self._retrying("Join", lambda: self._unary(self._stub.Join, request, self._timeout))
        return serde.join_reply_from_proto(reply)

    def poll(self, run_id: str, wait_s: int) -> m.SiteTask:
        request = serde.poll_request_to_proto(m.PollTaskRequest(run_id, wait_s))
        reply = self._retrying("PollTask", lambda: self._unary(self._stub.PollTask, request, self._timeout + wait_s))
        return serde.task_from_proto(reply)

    def get_model(self, version: int) -> tuple[m.ModelHeader, bytes]:
        """Download a FAM version; its length, sha256, version and format are verified before returning."""
        return self._retrying("GetModel", lambda: self._download(version))

    def submit(self, header: m.UpdateHeader, payload: bytes) -> m.SubmitReply:
        """Upload an update; resending after a lost reply is safe (the aggregator acknowledges a duplicate)."""

        def attempt() -> Any:
            chunks = serde.update_chunks_to_proto(header, payload, self.settings.chunk_bytes)
            return self._wait(self._stub.SubmitUpdate.future(chunks, metadata=self._metadata, timeout=self._timeout))

        return serde.submit_reply_from_proto(self._retrying("SubmitUpdate", attempt))

    # --- secure rounds (docs/design.md §4.6); each is idempotent: a resend is acknowledged as a duplicate ---

    def advertise_keys(self, request: m.AdvertiseKeysRequest) -> m.SecurePhaseReply:
        message = serde.advertise_keys_request_to_proto(request)
        reply = self._retrying("AdvertiseKeys", lambda: self._unary(self._stub.AdvertiseKeys, message, self._timeout))
        return serde.secure_reply_from_proto(reply)

    def share_keys(self, request: m.ShareKeysRequest) -> m.SecurePhaseReply:
        message = serde.share_keys_request_to_proto(request)
        reply = self._retrying("ShareKeys", lambda: self._unary(self._stub.ShareKeys, message, self._timeout))
        return serde.secure_reply_from_proto(reply)

    def submit_masked_input(self, header: m.MaskedInputHeader, data: bytes) -> m.SecurePhaseReply:
        def attempt() -> Any:
            chunks = serde.masked_input_chunks_to_proto(header, data, self.settings.chunk_bytes)
            return self._wait(
                self._stub.SubmitMaskedInput.future(chunks, metadata=self._metadata, timeout=self._timeout)
            )

        return serde.secure_reply_from_proto(self._retrying("SubmitMaskedInput", attempt))

    def unmask(self, request: m.UnmaskRequest) -> m.SecurePhaseReply:
        message = serde.unmask_request_to_proto(request)
        reply = self._retrying("Unmask", lambda: self._unary(self._stub.Unmask, message, self._timeout))
        return serde.secure_reply_from_proto(reply)

    def heartbeat(self, run_id: str, activity: m.SiteActivity, round_number: int) -> m.HeartbeatReply:
        """One attempt, short deadline: a missed heartbeat is harmless and the next one comes soon."""
        request = serde.heartbeat_request_to_proto(m.HeartbeatRequest(run_id, activity, round_number))
        try:
            reply = self._stub.Heartbeat(request, metadata=self._metadata, timeout=min(10.0, self._timeout))
        except grpc.RpcError as error:
            if isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAVAILABLE:
                self._next_address("Heartbeat", error.code())
            raise _failure("Heartbeat", error) from None
        return serde.heartbeat_reply_from_proto(reply)

    # --- plumbing ---------------------------------------------------------------------------------------

    def _unary(self, method: Any, request: Any, timeout: float) -> Any:
        return self._wait(method.future(request, metadata=self._metadata, timeout=timeout))

    def _wait(self, future: Any) -> Any:
        """The call's result; cancels it and raises ``AgentStopped`` as soon as ``stop`` is set."""
        finished = threading.Event()
        future.add_done_callback(lambda _: finished.set())
        while not finished.wait(0.2):
            if self.stop.is_set():
                future.cancel()
                raise AgentStopped
        return future.result()

    def _download(self, version: int) -> tuple[m.ModelHeader, bytes]:
        stream = self._stub.GetModel(
            serde.get_model_request_to_proto(m.GetModelRequest(version)), metadata=self._metadata, timeout=self._timeout
        )
        header: m.ModelHeader | None = None
        parts: list[bytes] = []
        received = 0
        try:
            for message in stream:
                if self.stop.is_set():
                    raise AgentStopped
                chunk = serde.model_chunk_from_proto(message)
                if isinstance(chunk, m.ModelHeader):
                    if header is not None:
                        raise AggregatorError("GetModel", "DATA_LOSS", "the model stream repeated its header")
                    header = chunk
                    continue
                if header is None:
                    raise AggregatorError("GetModel", "DATA_LOSS", "the model stream sent data before its header")
                received += len(chunk)
                if received > header.total_bytes:
                    raise AggregatorError(
                        "GetModel", "DATA_LOSS", f"more than the announced {header.total_bytes} bytes"
                    )
                parts.append(chunk)
        finally:
            stream.cancel()  # no-op after a complete stream; frees the call when we stop early
        data = b"".join(parts)
        _check_download(version, header, data)
        assert header is not None
        return header, data

    def _retrying(self, method: str, call: Callable[[], _T], idempotent: bool = True) -> _T:
        attempt = 0
        while True:
            if self.stop.is_set():
                raise AgentStopped
            try:
                return call()
            except grpc.FutureCancelledError:
                raise AgentStopped from None
            except grpc.RpcError as error:
                code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
                hint = retry_hint_s(error)
                retryable = (
                    code == grpc.StatusCode.UNAVAILABLE
                    or (idempotent and code == grpc.StatusCode.DEADLINE_EXCEEDED)
                    or hint is not None  # a per-site limit of the aggregator: busy, come back later
                )
                if not retryable:
                    raise _failure(method, error) from None
                self._next_address(method, code)
                # The first pass over several addresses is quick; backoff grows once per whole pass.
                delay = self.backoff.delay(attempt // len(self._targets)) if hint is None else hint
                event(
                    log,
                    "aggregator unreachable; retrying",
                    logging.WARNING if attempt else logging.INFO,
                    method=method,
                    code=code.name,
                    # e.g. "connection refused", or a TLS handshake failure: what the operator must fix
                    detail=(error.details() if isinstance(error, grpc.Call) else None) or None,
                    attempt=attempt + 1,
                    retry_in_s=round(delay, 2),
                    target=self.target,
                )
                attempt += 1
                if self.stop.wait(delay):
                    raise AgentStopped from None


RETRY_AFTER_MS = "retry-after-ms"  # the aggregator's hint on a RESOURCE_EXHAUSTED per-site limit
MAX_RETRY_HINT_S = 300.0  # a hint is followed, but never into an hours-long sleep


def retry_hint_s(error: grpc.RpcError) -> float | None:
    """Seconds the aggregator asked us to wait before retrying, for a RESOURCE_EXHAUSTED that carries one.

    A RESOURCE_EXHAUSTED without the hint (a message over the size limit) is not retried: it would fail again.
    """
    if not isinstance(error, grpc.Call) or error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_MS:
            try:
                return min(max(int(value) / 1000, 0.0), MAX_RETRY_HINT_S)
            except ValueError:
                return None
    return None


def _failure(method: str, error: grpc.RpcError) -> AggregatorError:
    if isinstance(error, grpc.Call):
        return AggregatorError(method, error.code().name, error.details() or "")
    return AggregatorError(method, "UNKNOWN", str(error))


def _check_download(version: int, header: m.ModelHeader | None, data: bytes) -> None:
    if header is None:
        raise AggregatorError("GetModel", "DATA_LOSS", "the model stream ended without a header")
    problems = []
    if header.version != version:
        problems.append(f"asked for version {version}, got {header.version}")
    if header.format != m.MODEL_FORMAT_SAFETENSORS:
        problems.append(f"unsupported model format {header.format}")
    if len(data) != header.total_bytes:
        problems.append(f"received {len(data)} of {header.total_bytes} bytes")
    elif hashlib.sha256(data).hexdigest() != header.sha256.lower():
        problems.append("sha256 mismatch")
    if problems:
        # DATA_LOSS is not retried: a server that sends a wrong model once will likely do it again.
        raise AggregatorError("GetModel", "DATA_LOSS", "; ".join(problems))
