"""A full round over real sockets: join, poll, download, submit, close, lineage, next round."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from aggregator_service.server import RunningServer
from fedmedclip.federation.aggregate import SiteUpdate, aggregate
from fedmedclip.federation.codec import decode_update
from fedmedclip.federation.fam_bytes import fam_from_bytes, sha256_hex
from fedmedclip.rpc.v1 import admin_pb2
from tests.aggregator.helpers import DIM, AdminStub, SiteClient, make_update, run_config


def test_a_round_closes_with_the_library_aggregate(
    server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    sites = [enrol(f"site-{i}") for i in range(3)]
    run_id = admin.start(run_config(min_sites=3, rounds=2))
    joined = sites[0].join()
    assert joined.run_id == run_id and joined.site == "site-0" and joined.run_config.embed_dim == DIM
    task = sites[0].poll(run_id)
    assert task.WhichOneof("kind") == "train" and task.train.round == 1
    base = task.train.fam_version
    header, data = sites[0].get_model(base)
    assert sha256_hex(data) == header.sha256 and header.total_bytes == len(data)
    initial = fam_from_bytes(data, DIM)

    updates = [make_update(seed=i) for i in range(3)]
    for i, (site, update) in enumerate(zip(sites, updates, strict=True)):
        response = site.submit(run_id, 1, base, update, num_samples=10 * (i + 1))
        assert response.accepted and not response.duplicate

    status = admin.wait_for(lambda s: s.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED, run_id)
    closed = status.rounds[0]
    assert closed.output_version > base and status.current_round == 2
    assert [p.state for p in closed.participants] == [admin_pb2.PARTICIPATION_STATE_ACCEPTED] * 3
    assert abs(closed.metrics["train_loss"] - 0.5) < 1e-9

    expected = aggregate(
        initial,
        [SiteUpdate(f"site-{i}", 10 * (i + 1), decode_update(u.payload)) for i, u in enumerate(updates)],
    )
    _, new_data = sites[1].get_model(closed.output_version)
    produced = fam_from_bytes(new_data, DIM)
    for name, tensor in expected.items():
        np.testing.assert_array_equal(produced[name], tensor)

    versions = admin.versions(run_id)
    assert [(v.round, v.parent_version) for v in versions] == [(0, 0), (1, base)]
    assert [(c.site, c.num_samples) for c in versions[1].contributions] == [
        ("site-0", 10),
        ("site-1", 20),
        ("site-2", 30),
    ]
    task = sites[2].poll(run_id)
    assert task.train.round == 2 and task.train.fam_version == closed.output_version


def test_site_level_dp_fedavg_clips_noises_and_accounts_each_round(
    server: RunningServer, admin: AdminStub, enrol: Callable[[str], SiteClient]
) -> None:
    import numpy as np
    from dp_accounting import dp_event, rdp

    from fedmedclip.privacy.config import PrivacyConfig

    sites = [enrol(f"site-{i}") for i in range(3)]
    # Next to no noise on the sum and a clip bound above every update's norm: the new FAM must be the plain
    # sum of the (dense) updates over the expected number of sites, 3, implicit zeros included.
    privacy = PrivacyConfig(
        mode="site", site_noise_multiplier=1e-6, site_count_noise=1.0, site_initial_clip=10.0, delta=1e-3
    )
    run_id = admin.start(run_config(min_sites=3, rounds=2, privacy=privacy))
    base = sites[0].poll(run_id).train.fam_version
    initial = fam_from_bytes(sites[0].get_model(base)[1], DIM)
    updates = [make_update(seed=20 + i) for i in range(3)]
    for i, (site, update) in enumerate(zip(sites, updates, strict=True)):
        assert site.submit(run_id, 1, base, update, num_samples=10 * (i + 1)).accepted
    status = admin.wait_for(lambda s: s.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED, run_id)
    closed = status.rounds[0]
    produced = fam_from_bytes(sites[0].get_model(closed.output_version)[1], DIM)
    dense = [decode_update(u.payload).to_dense() for u in updates]
    for name, tensor in initial.items():
        expected = tensor + sum(d.get(name, np.zeros_like(tensor)) for d in dense) / 3
        np.testing.assert_allclose(produced[name], expected, rtol=0, atol=1e-4)
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_event.GaussianDpEvent(1e-6), 1)
    assert closed.metrics["dp_site_delta"] == 1e-3
    assert np.isclose(closed.metrics["dp_site_epsilon"], accountant.get_epsilon(1e-3), rtol=1e-9)
    assert closed.metrics["dp_site_clip"] == 10.0 and closed.metrics["dp_site_clipped"] == 0
    # All three updates were under the bound (b̄ ≈ 1 > γ = 0.5): the bound shrinks, and round 2 uses it.
    assert closed.metrics["dp_site_clip_next"] < 10.0
    for i, site in enumerate(sites):
        assert site.submit(run_id, 2, closed.output_version, make_update(seed=30 + i), num_samples=5).accepted
    second = admin.wait_for(lambda s: s.rounds[1].state == admin_pb2.ROUND_STATE_CLOSED, run_id).rounds[1]
    assert second.metrics["dp_site_clip"] == closed.metrics["dp_site_clip_next"]
