"""The agent's side of a secure round (docs/design.md §4.6, §6.4): train, advertise, share, mask, unmask.

One ``SecureWork`` holds this site's secrets for one round (two X25519 private keys, the self-mask seed,
the peers' shares) and its encoded vector. It lives in memory only and is dropped when the round's unmask
answer is sent, when a task of another round arrives, or with the process: a restarted agent simply sits
out the round it was in (the aggregator recovers or abandons it) and joins the next one.

The site derives the round's public parameters itself (threshold, modulus, graph) from the run config and
the number of advertised sites, and refuses a share-keys task that announces anything else; the
protocol's client checks the unmask request (enough survivors, no peer both alive and dropped, once).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from fedmedclip.federation import messages as m
from fedmedclip.federation.delta import alive_rows_of_state, fam_delta
from fedmedclip.secagg import encoding, packing
from fedmedclip.secagg.protocol import SecAggClient, SecAggError
from hospital_agent.client import AggregatorError
from hospital_agent.session import RunSession

if TYPE_CHECKING:
    from hospital_agent.loop import AgentLoop

# Refusals that mean the phase moved on without this site: drop the round's work and carry on.
_DROP = ("FAILED_PRECONDITION", "NOT_FOUND", "ALREADY_EXISTS", "INVALID_ARGUMENT", "PERMISSION_DENIED")


@dataclass
class SecureWork:
    run_id: str
    round: int
    fam_version: int
    client: SecAggClient
    encoded: encoding.SiteEncoding
    dim: int
    sites: int = 0  # advertised sites, known from the share-keys task


class SecurePhases:
    """Runs the secure tasks the aggregator hands out; keeps at most one round's secrets."""

    def __init__(self, agent: AgentLoop) -> None:
        self.agent = agent
        self.work: SecureWork | None = None

    def handle(self, session: RunSession, task: m.SecureTask) -> None:
        work = self.work
        if work is not None and (work.run_id, work.round) != (session.run_id, task.round):
            self._drop("a newer round started")
            work = None
        try:
            if isinstance(task, m.SecureAdvertiseTask):
                self._advertise(session, task)
            elif work is None:
                self._sit_out(session, task)
            elif isinstance(task, m.SecureShareKeysTask):
                self._share_keys(session, work, task)
            elif isinstance(task, m.SecureMaskedInputTask):
                self._masked_input(session, work, task)
            else:
                self._unmask(session, work, task)
        except AggregatorError as error:
            if error.code not in _DROP:
                raise
            self.agent._event(
                "secure round refused; work dropped",
                logging.WARNING,
                run=session.run_id,
                round=task.round,
                code=error.code,
                detail=error.details,
            )
            self._drop(error.code)
        except SecAggError as error:  # the server's claim failed a check: reveal nothing more this round
            self.agent._event(
                "secure round refused by this site",
                logging.ERROR,
                run=session.run_id,
                round=task.round,
                reason=str(error),
            )
            self._drop("refused")

    # --- phases -----------------------------------------------------------------------------------------

    def _advertise(self, session: RunSession, task: m.SecureAdvertiseTask) -> None:
        agent, state = self.agent, self.agent.state
        if self.work is not None and self.work.round == task.round:  # a lost reply: the same keys again
            self._send_keys(session, self.work)
            return
        if agent._budget_spent():  # no further contribution; the last bundle keeps serving (design §3.15)
            agent._sleep(float(agent.settings.poll_wait_s))
            return
        if state.fam is None or state.fam_version != task.fam_version:
            agent._adopt(session, task.fam_version)
        # Record-level DP composes with secure rounds: the same privacy gate as a plain round.
        trained = agent._train_locally(session, task.round, task.fam_version, secure=True)
        if trained is None:
            return
        outcome, plan = trained
        assert outcome.fam is not None and state.fam is not None
        config = session.config
        residual = state.residual if state.residual is not None and set(state.residual) == set(outcome.fam) else None
        secure = config.secure_aggregation
        encoded = encoding.encode_site(
            _numpy(fam_delta(outcome.fam, state.fam)),
            None if residual is None else _numpy(residual),
            _numpy(alive_rows_of_state(outcome.fam)),
            encoding.round_layout(session.run_id, task.round, config.embed_dim, secure.row_fraction),
            secure,
            encoding.site_weight(secure, outcome.num_samples, config.weighting),
        )
        state.head, state.head_classes = outcome.head, list(session.data.classes)
        agent._charge(plan)  # saved before the first key leaves: the noised vector may now reach the sum
        agent.store.save(state)
        self.work = SecureWork(
            session.run_id, task.round, task.fam_version, SecAggClient(agent.site), encoded, config.embed_dim
        )
        agent._event(
            "round trained",
            run=session.run_id,
            round=task.round,
            version=task.fam_version,
            seconds=round(outcome.seconds, 3),
            clipped=encoded.clipped or None,
            clamped=encoded.clamped or None,
            secure=True,
        )
        self._send_keys(session, self.work)

    def _send_keys(self, session: RunSession, work: SecureWork) -> None:
        self.agent.heartbeat.set(session.run_id, "uploading", work.round)
        self.agent.client.advertise_keys(m.AdvertiseKeysRequest(session.run_id, work.round, work.client.advertise()))

    def _share_keys(self, session: RunSession, work: SecureWork, task: m.SecureShareKeysTask) -> None:
        sites = len(task.keys)
        params = encoding.round_params(session.run_id, task.round, session.config.secure_aggregation, work.dim, sites)
        announced = (task.threshold, task.bits, task.degree or None, task.graph_seed)
        if announced != (params.threshold, params.bits, params.degree, params.graph_seed):
            raise SecAggError(
                f"the aggregator announced threshold {task.threshold}, {task.bits} bits, degree {task.degree}; "
                f"for {sites} sites the run's settings give {params.threshold}, {params.bits}, {params.degree or 0}"
            )
        work.sites = sites
        sealed = work.client.share_keys(task.keys, params)
        self.agent.client.share_keys(m.ShareKeysRequest(session.run_id, task.round, tuple(sealed)))

    def _masked_input(self, session: RunSession, work: SecureWork, task: m.SecureMaskedInputTask) -> None:
        fixed = session.config.secure_aggregation.fixed_point(work.sites)
        masked = work.client.masked_input(task.shares, work.encoded.residues(fixed))
        data = packing.pack(masked, fixed.bits)
        header = m.MaskedInputHeader(session.run_id, task.round, hashlib.sha256(data).hexdigest(), len(data))
        reply = self.agent.client.submit_masked_input(header, data)
        if reply.accepted:
            # From here the site's vector is in the sum even if it drops, so its residual moves on now.
            state = self.agent.state
            state.residual = {name: torch.from_numpy(value) for name, value in work.encoded.residual.items()}
            state.last_round = task.round
            self.agent.store.save(state)
            self.agent._event("masked input accepted", run=session.run_id, round=task.round, bytes=len(data))

    def _unmask(self, session: RunSession, work: SecureWork, task: m.SecureUnmaskTask) -> None:
        revealed = work.client.unmask(task.survivors, task.dropped)
        self.agent.client.unmask(m.UnmaskRequest(session.run_id, task.round, tuple(revealed)))
        self.agent._event(
            "unmask shares sent",
            run=session.run_id,
            round=task.round,
            survivors=len(task.survivors),
            dropped=len(task.dropped),
        )
        self._drop(None)

    def _sit_out(self, session: RunSession, task: m.SecureTask) -> None:
        """A phase of a round whose secrets this process does not hold (it restarted): wait it out."""
        self.agent._event(
            "secure round without this site's keys; waiting for the next round",
            logging.WARNING,
            run=session.run_id,
            round=task.round,
        )
        self.agent._sleep(float(self.agent.settings.poll_wait_s))

    def _drop(self, reason: str | None) -> None:
        if self.work is not None and reason is not None:
            self.agent._event("secure work dropped", logging.DEBUG, round=self.work.round, reason=reason)
        self.work = None  # the secrets go with the object


def _numpy(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: tensor.detach().cpu().numpy() for name, tensor in tensors.items()}
