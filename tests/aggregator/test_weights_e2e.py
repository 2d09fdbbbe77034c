"""The weight defences wired through a real server: the enrolment cap, the run's cap, the clip and the rule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedmedclip.federation.aggregate import SiteUpdate, aggregate
from fedmedclip.federation.codec import decode_update
from fedmedclip.federation.fam_bytes import fam_from_bytes
from fedmedclip.rpc.v1 import admin_pb2
from tests.aggregator.helpers import DIM, AdminStub, SiteClient, make_update, run_config


@pytest.mark.parametrize("rule", ["mean", "trimmed_mean"])
def test_a_poisoned_site_is_capped_by_its_enrolment_clipped_and_trimmed_as_configured(
    admin: AdminStub, channel: Any, rule: str
) -> None:
    honest = [SiteClient(channel, admin.enrol(f"honest-{i}"), f"honest-{i}") for i in range(3)]
    token = str(admin("EnrolSite", admin_pb2.EnrolSiteRequest(site="poisoned", max_samples=50)).token)
    poisoned = SiteClient(channel, token, "poisoned")
    config = run_config(min_sites=4, rounds=2, clip_norm=0.5, max_samples_per_site=1000, aggregation_rule=rule)
    run_id = admin.start(config)
    base = honest[0].poll(run_id).train.fam_version
    _, data = honest[0].get_model(base)
    initial = fam_from_bytes(data, DIM)
    updates = [make_update(seed=i) for i in range(3)]
    bad = make_update(seed=9, scale=10.0)  # a huge update: the clip must shrink it
    for site, update, samples in zip(honest, updates, (100, 200, 5000), strict=True):
        assert site.submit(run_id, 1, base, update, num_samples=samples).accepted
    assert poisoned.submit(run_id, 1, base, bad, num_samples=10**9).accepted
    status = admin.wait_for(lambda s: s.rounds[0].state == admin_pb2.ROUND_STATE_CLOSED, run_id)
    _, produced_bytes = honest[1].get_model(status.rounds[0].output_version)
    produced = fam_from_bytes(produced_bytes, DIM)

    # What the library computes with the caps applied: 5000 → 1000 (run), 10^9 → 50 (enrolment).
    expected = aggregate(
        initial,
        [
            SiteUpdate("honest-0", 100, decode_update(updates[0].payload)),
            SiteUpdate("honest-1", 200, decode_update(updates[1].payload)),
            SiteUpdate("honest-2", 1000, decode_update(updates[2].payload)),
            SiteUpdate("poisoned", 50, decode_update(bad.payload)),
        ],
        clip_norm=0.5,
        rule=rule,  # type: ignore[arg-type]
    )
    for name, tensor in expected.items():
        np.testing.assert_allclose(produced[name], tensor, rtol=0, atol=1e-7)
    unclipped = aggregate(
        initial, [SiteUpdate("poisoned", 1, decode_update(bad.payload))]
    )  # the poisoned update alone, unclipped, for scale
    moved = max(float(np.abs(produced[n] - initial[n]).max()) for n in initial)
    alone = max(float(np.abs(unclipped[n] - initial[n]).max()) for n in initial)
    assert moved < alone / 5
