"""``backend: ray`` on a local Ray with 2 actors gives exactly the ``backend: local`` result for the same seed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fedmedclip.simulation.config import parse_simulate_config
from fedmedclip.simulation.runner import run_simulation

pytest.importorskip("ray")

pytestmark = [pytest.mark.ray, pytest.mark.heavy]


def test_ray_and_local_agree_bit_for_bit(small_config: dict[str, Any]) -> None:
    local = run_simulation(parse_simulate_config(small_config))
    ray = run_simulation(parse_simulate_config({**small_config, "backend": "ray"}))
    for name, tensor in local.global_fam.items():
        assert torch.equal(tensor, ray.global_fam[name]), name
    assert local.final_site_accuracy == ray.final_site_accuracy
    assert [r.upload_bytes for r in local.rounds] == [r.upload_bytes for r in ray.rounds]
    assert [(r.aggregated, r.dropped, r.stragglers) for r in local.rounds] == [
        (r.aggregated, r.dropped, r.stragglers) for r in ray.rounds
    ]
    # Two actors, each reporting its own shard's state and its own process's memory.
    assert [m.shard for m in ray.memory] == [0, 1]
    assert [(m.state_bytes, m.sites_with_state) for m in ray.memory] == [
        (m.state_bytes, m.sites_with_state) for m in local.memory
    ]
    assert all(m.peak_rss_bytes > 0 for m in ray.memory)
