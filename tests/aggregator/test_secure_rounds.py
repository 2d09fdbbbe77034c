"""Secure rounds through the real aggregator over sockets (docs/design.md §4.6, §6.4).

Ten simulated sites run the four phases with the library's SecAggClient against an in-process server on a
real database. What the tests check, as a user would notice it:
- the committed FAM is the round's input plus exactly the decoded sum of the sites' encodings;
- 3 of 10 sites dropping after masked input still give that exact sum;
- fewer than t masked inputs abandon the round with a clear message, no unmask task is ever handed out and
  nothing is stored;
- nothing single-site is visible: every stored row (read table by table during and after the round) and
  every message the sites sent is checked; each masked input passes a χ² uniformity test (64 bins of the
  residue's top bits, tail 1e-6) and is uncorrelated with the site's plaintext vector;
- a restarted aggregator abandons the secure round and opens a fresh one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
import sqlalchemy as sa

from aggregator_service.server import RunningServer
from fedmedclip.federation import messages as m
from fedmedclip.federation import serde
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.rpc.v1 import admin_pb2, federation_pb2
from fedmedclip.secagg import encoding, packing
from fedmedclip.secagg.config import SecureAggregationConfig
from fedmedclip.secagg.protocol import SecAggClient
from tests.aggregator.helpers import DIM, TIMEOUT, AdminStub, SiteClient, bearer, run_config
from tests.secagg.test_primitives import chi_square_critical

SECURE = SecureAggregationConfig(
    enabled=True,
    threshold=6,
    clip_norm=1.0,
    coordinate_bound=0.05,
    precision_bits=8,
    weight_cap=50,
    row_fraction=1.0,
    phase_timeout_s=3.0,
)


def secure_config(**overrides: Any) -> RunConfig:
    values: dict[str, Any] = {"rounds": 2, "min_sites": 2, "secure_aggregation": SECURE}
    values.update(overrides)
    return run_config(**values)


@dataclass
class SecureSite:
    """A site that runs the secure phases by hand and records every message it sends."""

    wire: SiteClient
    run_id: str
    config: RunConfig
    seed: int
    sent: list[bytes] = field(default_factory=list)
    protocol: SecAggClient | None = None
    encoded: encoding.SiteEncoding | None = None
    plain_packed: bytes = b""
    masked: np.ndarray | None = None

    @property
    def secure(self) -> SecureAggregationConfig:
        return self.config.secure_aggregation

    @property
    def name(self) -> str:
        return self.wire.name

    def call(self, method: str, request: Any) -> Any:
        self.sent.append(request.SerializeToString())
        return getattr(self.wire.stub, method)(request, metadata=bearer(self.wire.token), timeout=TIMEOUT)

    def task(self, wait: int = 5) -> m.SiteTask:
        return serde.task_from_proto(self.wire.poll(self.run_id, wait))

    def advertise(self, task: m.SecureAdvertiseTask) -> None:
        rng = np.random.default_rng(self.seed)
        delta = {
            name: rng.normal(0, 0.004, (DIM, DIM) if name in encoding.MATRIX_NAMES else (DIM,))
            for name in encoding.TENSOR_NAMES
        }
        alive = {name: np.ones(DIM, dtype=bool) for name in encoding.MATRIX_NAMES}
        layout = encoding.round_layout(self.run_id, task.round, DIM, self.secure.row_fraction)
        weight = encoding.site_weight(SECURE, 10 + 7 * self.seed, "samples")
        self.encoded = encoding.encode_site(delta, None, alive, layout, self.secure, weight)
        self.protocol = SecAggClient(self.name)
        request = m.AdvertiseKeysRequest(self.run_id, task.round, self.protocol.advertise())
        reply = self.call("AdvertiseKeys", serde.advertise_keys_request_to_proto(request))
        assert reply.accepted

    def share(self, task: m.SecureShareKeysTask) -> None:
        assert self.protocol is not None
        params = encoding.round_params(self.run_id, task.round, self.secure, DIM, len(task.keys))
        assert (task.threshold, task.bits) == (params.threshold, params.bits)
        sealed = self.protocol.share_keys(task.keys, params)
        self.call(
            "ShareKeys", serde.share_keys_request_to_proto(m.ShareKeysRequest(self.run_id, task.round, tuple(sealed)))
        )

    def mask(self, task: m.SecureMaskedInputTask, sites: int) -> None:
        assert self.protocol is not None and self.encoded is not None
        fixed = self.secure.fixed_point(sites)
        residues = self.encoded.residues(fixed)
        self.plain_packed = packing.pack(residues, fixed.bits)
        self.masked = self.protocol.masked_input(task.shares, residues)
        data = packing.pack(self.masked, fixed.bits)
        header = m.MaskedInputHeader(self.run_id, task.round, hashlib.sha256(data).hexdigest(), len(data))
        chunks = list(serde.masked_input_chunks_to_proto(header, data, 4096))
        self.sent.extend(chunk.SerializeToString() for chunk in chunks)
        reply = self.wire.stub.SubmitMaskedInput(iter(chunks), metadata=bearer(self.wire.token), timeout=TIMEOUT)
        assert reply.accepted

    def unmask(self, task: m.SecureUnmaskTask) -> None:
        assert self.protocol is not None
        revealed = self.protocol.unmask(task.survivors, task.dropped)
        self.call("Unmask", serde.unmask_request_to_proto(m.UnmaskRequest(self.run_id, task.round, tuple(revealed))))


def start_sites(
    admin: AdminStub, enrol: Callable[[str], SiteClient], count: int, config: RunConfig
) -> list[SecureSite]:
    clients = [enrol(f"site-{i:02d}") for i in range(count)]
    run_id = admin.start(config)
    return [SecureSite(client, run_id, config, seed=i) for i, client in enumerate(clients)]


def wait_task(site: SecureSite, kind: type, attempts: int = 8) -> Any:
    for _ in range(attempts):
        task = site.task()
        if isinstance(task, kind):
            return task
    raise AssertionError(f"{site.name} never got a {kind.__name__}")


def through_masked_input(sites: list[SecureSite], maskers: list[SecureSite]) -> None:
    for site in sites:
        site.advertise(wait_task(site, m.SecureAdvertiseTask))
    for site in sites:
        site.share(wait_task(site, m.SecureShareKeysTask))
    for site in maskers:
        site.mask(wait_task(site, m.SecureMaskedInputTask), len(sites))


def stored_rows(server: RunningServer) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the aggregator's database."""
    engine = sa.create_engine(server.settings.database_url)
    try:
        with engine.connect() as connection:
            tables = sa.inspect(connection).get_table_names()
            return {t: [tuple(r) for r in connection.execute(sa.text(f'SELECT * FROM "{t}"'))] for t in tables}
    finally:
        engine.dispose()


def assert_uniform(values: np.ndarray, bits: int) -> None:
    bins = (values.astype(np.float64) / (1 << bits) * 64).astype(np.int64)
    counts = np.bincount(bins, minlength=64)
    expected = len(values) / 64
    assert float(((counts - expected) ** 2 / expected).sum()) < chi_square_critical(63)


@pytest.mark.parametrize("silent", [0, 3])
def test_a_secure_round_commits_the_exact_sum_and_stores_nothing_single_site(
    server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient], silent: int
) -> None:
    sites = start_sites(admin, enrol, 10, secure_config())
    run_id = sites[0].run_id
    input_version = admin.status(run_id).rounds[0].input_version
    _, parent_bytes = sites[0].wire.get_model(input_version)
    through_masked_input(sites, sites)

    # While masked inputs are stored: no table holds any site's plaintext vector, and each is uniform.
    fixed = SECURE.fixed_point(10)
    during = stored_rows(server)
    assert len(during["masked_inputs"]) == 10 and during["updates"] == []
    blobs = [value for rows in during.values() for row in rows for value in row if isinstance(value, bytes)]
    for site in sites:
        assert all(site.plain_packed not in blob for blob in blobs)
        assert site.masked is not None and site.encoded is not None
        assert_uniform(site.masked, fixed.bits)
        plain = site.encoded.integers.astype(np.float64)
        # Independent vectors of n coordinates have |r| ≈ 1/√n; 5/√n is a 5-sigma bound.
        assert abs(np.corrcoef(plain, site.masked.astype(np.float64))[0, 1]) < 5 / np.sqrt(len(plain))
    # ...nor any message a site sent: the only vector on the wire is the masked one.
    for site in sites:
        assert all(site.plain_packed[:64] not in message for other in sites for message in other.sent)

    answering = sites[silent:]  # the first `silent` sites drop after masked input
    for site in answering:
        task = wait_task(site, m.SecureUnmaskTask)
        assert task.survivors == tuple(s.name for s in sites) and task.dropped == ()
        site.unmask(task)
    status = admin.wait_for(lambda s: s.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED, run_id)
    output = status.rounds[0].output_version

    layout = encoding.round_layout(run_id, 1, DIM, SECURE.row_fraction)
    total = sum(site.encoded.integers for site in sites if site.encoded is not None)
    decoded = encoding.decode_sum(fixed.to_ring(total), layout, SECURE, fixed)
    expected = encoding.apply_mean(encoding.fam_arrays_from_bytes(parent_bytes, DIM), decoded, layout)
    _, produced = sites[-1].wire.get_model(output)
    assert produced == encoding.fam_arrays_to_bytes(expected)

    after = stored_rows(server)
    assert after["masked_inputs"] == [] and after["updates"] == []
    assert status.rounds[0].metrics["secure_sites"] == 10
    assert all(isinstance(wait_task(site, m.SecureAdvertiseTask), m.SecureAdvertiseTask) for site in sites[:1])


def test_fewer_than_t_masked_inputs_abandon_the_round_and_reveal_nothing(
    server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    sites = start_sites(admin, enrol, 8, secure_config())
    run_id = sites[0].run_id
    through_masked_input(sites, sites[:5])  # t = 6: five masked inputs cannot be unmasked
    status = admin.wait_for(lambda s: s.rounds[0].state == admin_pb2.ROUND_STATE_ABANDONED, run_id, timeout=20)
    assert "only 5 masked inputs; the threshold is 6" in status.rounds[0].message
    assert "nothing was unmasked" in status.rounds[0].message
    assert status.current_round == 2 and stored_rows(server)["masked_inputs"] == []
    # No site was ever asked to reveal a share: the next task is the fresh round's first phase.
    for site in sites:
        task = site.task()
        assert isinstance(task, m.SecureAdvertiseTask) and task.round == 2


def test_plain_uploads_and_out_of_phase_calls_are_refused_clearly(
    server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    sites = start_sites(admin, enrol, 3, secure_config(secure_aggregation=SecureAggregationConfig(enabled=True)))
    site = sites[0]
    task = wait_task(site, m.SecureAdvertiseTask)
    bad_keys = m.AdvertiseKeysRequest(site.run_id, task.round, m.AdvertisedKeys("site-01", b"\x01" * 32, b"\x02" * 32))
    with pytest.raises(grpc.RpcError) as denied:
        site.call("AdvertiseKeys", serde.advertise_keys_request_to_proto(bad_keys))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    share = m.ShareKeysRequest(site.run_id, task.round, ())
    with pytest.raises(grpc.RpcError) as early:
        site.call("ShareKeys", serde.share_keys_request_to_proto(share))
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "advertise phase" in early.value.details()
    short = m.AdvertiseKeysRequest(site.run_id, task.round, m.AdvertisedKeys(site.name, b"\x01" * 5, b"\x02" * 32))
    with pytest.raises(grpc.RpcError) as invalid:
        site.call("AdvertiseKeys", serde.advertise_keys_request_to_proto(short))
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    site.advertise(task)  # accepted; the identical retry is a duplicate, different keys are refused
    assert site.protocol is not None
    again = m.AdvertiseKeysRequest(site.run_id, task.round, site.protocol.advertise())
    retried = site.call("AdvertiseKeys", serde.advertise_keys_request_to_proto(again))
    assert retried.accepted and retried.duplicate
    other = m.AdvertiseKeysRequest(site.run_id, task.round, SecAggClient(site.name).advertise())
    with pytest.raises(grpc.RpcError) as conflict:
        site.call("AdvertiseKeys", serde.advertise_keys_request_to_proto(other))
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "already advertised different keys" in conflict.value.details()
    header = federation_pb2.UpdateHeader(
        run_id=site.run_id, round=1, base_version=task.fam_version, num_samples=5, sha256="ab" * 32, total_bytes=10
    )
    with pytest.raises(grpc.RpcError) as plain:
        site.wire.stub.SubmitUpdate(iter([federation_pb2.UpdateChunk(header=header)]), metadata=bearer(site.wire.token))
    assert plain.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "secure aggregation" in plain.value.details()


def test_a_restarted_aggregator_abandons_the_secure_round_and_opens_a_fresh_one(
    server_factory: Callable[..., RunningServer], database_url: str
) -> None:
    first = server_factory()
    with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        admin = AdminStub(channel)
        config = secure_config(secure_aggregation=dataclasses.replace(SECURE, threshold=None))  # t = 2 of 3
        sites = start_sites(admin, lambda name: SiteClient(channel, admin.enrol(name), name), 3, config)
        for site in sites:
            site.advertise(wait_task(site, m.SecureAdvertiseTask))
        for site in sites:
            site.share(wait_task(site, m.SecureShareKeysTask))
        sites[0].mask(wait_task(sites[0], m.SecureMaskedInputTask), 3)
        run_id = sites[0].run_id
    assert len(stored_rows(first)["masked_inputs"]) == 1
    first.stop(grace_s=0)
    second = server_factory()
    with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
        admin = AdminStub(channel)
        status = admin.status(run_id)
        assert status.rounds[0].state == admin_pb2.ROUND_STATE_ABANDONED
        assert "restarted during this secure round" in status.rounds[0].message
        assert status.current_round == 2 and status.rounds[1].state == admin_pb2.ROUND_STATE_OPEN
        assert stored_rows(second)["masked_inputs"] == []
        fresh = SiteClient(channel, sites[0].wire.token, sites[0].name)
        task = serde.task_from_proto(fresh.poll(run_id, 5))
        assert isinstance(task, m.SecureAdvertiseTask) and task.round == 2


def test_fam_bytes_written_without_torch_match_the_torch_writer() -> None:
    """Versions written by the numpy aggregator are byte for byte what the torch one wrote."""
    import torch
    from safetensors.torch import save

    from fedmedclip.federation.fam_bytes import initial_fam

    state = initial_fam(DIM, 3)
    assert encoding.fam_arrays_to_bytes(state) == save({k: torch.from_numpy(v) for k, v in state.items()})


def test_hostile_masked_inputs_and_unmask_answers_are_refused_and_store_nothing(
    server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    config = secure_config(secure_aggregation=dataclasses.replace(SECURE, threshold=None))  # t = 2 of 3
    sites = start_sites(admin, enrol, 3, config)
    through_masked_input(sites, [])
    site = sites[0]
    task = wait_task(site, m.SecureMaskedInputTask)
    fixed = SECURE.fixed_point(3)
    size = packing.packed_size(encoding.round_layout(site.run_id, 1, DIM, SECURE.row_fraction).length, fixed.bits)

    def send(data: bytes, sha256: str, total: int) -> grpc.RpcError:
        header = m.MaskedInputHeader(site.run_id, task.round, sha256, total)
        chunks = serde.masked_input_chunks_to_proto(header, data, 4096)
        with pytest.raises(grpc.RpcError) as refused:
            site.wire.stub.SubmitMaskedInput(chunks, metadata=bearer(site.wire.token), timeout=TIMEOUT)
        return refused.value

    wrong_size = send(b"\x00" * (size - 1), hashlib.sha256(b"\x00" * (size - 1)).hexdigest(), size - 1)
    assert wrong_size.code() == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in wrong_size.details()
    wrong_sha = send(b"\x00" * size, "ab" * 32, size)
    assert wrong_sha.code() == grpc.StatusCode.INVALID_ARGUMENT and "sha256" in wrong_sha.details()
    longer = send(b"\x00" * (size + 5), "ab" * 32, size)
    assert longer.code() == grpc.StatusCode.INVALID_ARGUMENT and "longer" in longer.details()
    assert stored_rows(server)["masked_inputs"] == []
    for other in sites:
        other.mask(task if other is site else wait_task(other, m.SecureMaskedInputTask), 3)
    unmask = wait_task(site, m.SecureUnmaskTask)
    assert site.protocol is not None
    revealed = site.protocol.unmask(unmask.survivors, unmask.dropped)
    doubled = m.UnmaskRequest(site.run_id, unmask.round, (revealed[0], revealed[0]))
    with pytest.raises(grpc.RpcError) as twice:
        site.call("Unmask", serde.unmask_request_to_proto(doubled))
    assert twice.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    site.call("Unmask", serde.unmask_request_to_proto(m.UnmaskRequest(site.run_id, unmask.round, tuple(revealed))))
    for other in sites[1:]:
        other.unmask(wait_task(other, m.SecureUnmaskTask))
    status = admin.wait_for(lambda s: s.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED, site.run_id)
    assert status.rounds[0].metrics["secure_sites"] == 3
