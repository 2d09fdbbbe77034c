"""The agent's secure phases refuse a server that announces weaker parameters than the run's, and keep
their secrets for one round only (docs/design.md §4.6, §6.4)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import numpy as np

from fedmedclip.federation import messages as m
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.secagg import encoding
from fedmedclip.secagg.config import SecureAggregationConfig
from fedmedclip.secagg.protocol import SecAggClient
from hospital_agent.secure_round import SecurePhases, SecureWork

DIM = 8
SECURE = SecureAggregationConfig(enabled=True)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.calls: list[Any] = []

    def _event(self, message: str, level: int = logging.INFO, **_fields: object) -> None:
        self.events.append((message, level))

    def _sleep(self, seconds: float) -> None:
        self.events.append((f"slept {seconds}", logging.DEBUG))


def phases_with_work(sites: int) -> tuple[SecurePhases, Recorder, list[m.AdvertisedKeys], Any]:
    agent = Recorder()
    agent.client = SimpleNamespace(share_keys=agent.calls.append)  # type: ignore[attr-defined]
    agent.settings = SimpleNamespace(poll_wait_s=5)  # type: ignore[attr-defined]
    phases = SecurePhases(agent)  # type: ignore[arg-type]
    me = SecAggClient("site-00")
    encoded = encoding.encode_site(
        {n: np.zeros((DIM, DIM) if n in encoding.MATRIX_NAMES else DIM) for n in encoding.TENSOR_NAMES},
        None,
        {n: np.ones(DIM, dtype=bool) for n in encoding.MATRIX_NAMES},
        encoding.round_layout("r1", 1, DIM, SECURE.row_fraction),
        SECURE,
        1,
    )
    phases.work = SecureWork("r1", 1, 1, me, encoded, DIM)
    keys = [me.advertise()] + [SecAggClient(f"site-{i:02d}").advertise() for i in range(1, sites)]
    session = SimpleNamespace(run_id="r1", config=RunConfig(embed_dim=DIM, secure_aggregation=SECURE))
    return phases, agent, keys, session


def test_a_lowered_threshold_is_refused_and_the_secrets_dropped() -> None:
    phases, agent, keys, session = phases_with_work(6)
    params = encoding.round_params("r1", 1, SECURE, DIM, 6)
    lowered = m.SecureShareKeysTask(1, 2, params.bits, 0, params.graph_seed, tuple(keys), None)
    phases.handle(session, lowered)
    assert agent.calls == [] and phases.work is None
    assert ("secure round refused by this site", logging.ERROR) in agent.events


def test_the_announced_parameters_are_accepted_and_shares_go_to_every_neighbour() -> None:
    phases, agent, keys, session = phases_with_work(6)
    params = encoding.round_params("r1", 1, SECURE, DIM, 6)
    task = m.SecureShareKeysTask(1, params.threshold, params.bits, 0, params.graph_seed, tuple(keys), None)
    phases.handle(session, task)
    (request,) = agent.calls
    assert {item.receiver for item in request.shares} == {k.site for k in keys[1:]}
    assert phases.work is not None and phases.work.sites == 6
    newer = m.SecureUnmaskTask(2, (), (), None)  # a task of a later round: this round's secrets go
    phases.handle(session, newer)
    assert phases.work is None and ("slept 5.0", logging.DEBUG) in agent.events  # it sits that round out
