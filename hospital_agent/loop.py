"""The agent's service loop: join, poll, train, submit, adopt new FAM versions, publish, across runs.

Per run: Join → load the run's backbone → embed the site (cached) → then poll:
- ``train(round, version)``: adopt ``version`` if new (download, evaluate, publish the bundle), train one
  local round, commit the update as *pending*, upload it, and on acknowledgement keep the new residual;
- ``wait``: sleep the time given, with jitter;
- ``done``: adopt the final version, publish, and wait for the next run.

Restart safety comes from ``state``: a pending update is resent byte for byte (the aggregator acknowledges a
duplicate), the head, the residual and the FAM version are reloaded. Outages are the client's business: it
retries ``UNAVAILABLE`` for as long as it takes. Fatal problems (refused token, incompatible run, no data)
raise; ``stop`` (SIGTERM) unwinds through ``AgentStopped`` between or inside waits.
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from fedmedclip.data.imagefolder import LabeledImages
from fedmedclip.federation import messages as m
from fedmedclip.federation.arrays import to_torch
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.federation.fam_bytes import fam_from_bytes
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.logs import event
from fedmedclip.privacy.budget import RoundPlan, history_from, next_round, plan_sigma
from fedmedclip.privacy.ledger import PrivacyGuarantee, PrivacyLedger
from hospital_agent.adapters import load_site_images, report_skipped
from hospital_agent.client import AgentStopped, AggregatorError, FederationClient, Interceptor
from hospital_agent.heartbeat import Heartbeat
from hospital_agent.publish import publish_bundle
from hospital_agent.secure_round import SecurePhases
from hospital_agent.session import RunSession, prepare_session
from hospital_agent.settings import AgentSettings, ConfigError
from hospital_agent.state import AgentState, PendingUpdate, StateStore
from hospital_agent.trainer import (
    RoundOutcome,
    compatible_head,
    evaluate_and_calibrate,
    majority_rate,
    resolve_device,
    train_round,
)

log = logging.getLogger("hospital_agent.loop")
# Submission refusals that mean "this update will never be accepted": drop it and carry on with the next task.
_DROP_UPDATE = {
    "FAILED_PRECONDITION": "the round moved on before the update arrived",
    "NOT_FOUND": "the run is gone",
    "ALREADY_EXISTS": "the aggregator holds a different update from this site for the round (state restored?)",
    "INVALID_ARGUMENT": "the aggregator refused the update as invalid",
}


class AgentLoop:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        stop: threading.Event | None = None,
        interceptors: Sequence[Interceptor] = (),
    ) -> None:
        self.settings = settings
        self.site = settings.site
        self.stop = stop or threading.Event()
        self.store = StateStore(settings.state_dir)
        self.device = resolve_device(settings.device)
        self.client = FederationClient(settings, settings.require_token(), self.stop, interceptors=interceptors)
        self.heartbeat = Heartbeat(self.client, settings.heartbeat_s, self.stop)
        self.state = AgentState(site=self.site)
        self._session: RunSession | None = None
        self.secure = SecurePhases(self)  # a secure round's secrets, in memory for that round only

    # --- the service ------------------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``stop`` is set; raises for what needs the operator (see the module docstring)."""
        images = load_site_images(self.settings.data)
        report_skipped(images.skipped, self.site, self.settings.state_dir, "scan")
        self._event(
            "agent starting",
            aggregator=self.settings.aggregator,
            adapter=self.settings.data.adapter,
            images=len(images.records),
            classes=len(images.classes),
            skipped=len(images.skipped),
            device=str(self.device),
        )
        try:
            with self.store.lock():
                self.state = self.store.load(self.site)
                self.heartbeat.start()
                self._serve(images)
        except AgentStopped:
            pass
        finally:
            self.heartbeat.close()
            self.client.close()
        self._event("agent stopped", run=self.state.run_id or None, round=self.state.last_round or None)

    def _serve(self, images: LabeledImages) -> None:
        idle = False
        while not self.stop.is_set():
            joined = self._join()
            if not joined.run_id or (joined.run_id == self.state.run_id and self.state.run_done):
                self.heartbeat.set("", "idle")
                # Logged once per idle spell, not every idle_poll_s: an agent may wait days for a run.
                level = logging.DEBUG if idle else logging.INFO
                self._event("no active run; waiting", level, retry_in_s=self.settings.idle_poll_s)
                idle = True
                self._sleep(self.settings.idle_poll_s)
                continue
            idle = False
            assert joined.run_config is not None
            session = self._prepare(joined.run_id, joined.run_config, images)
            self._enter_run(session)
            if self.state.pending is not None:
                self._submit_pending()
            self._serve_run(session)

    def _join(self) -> m.JoinReply:
        reply = self.client.join(
            device=str(self.device), platform=platform.platform(terse=True), torch_version=torch.__version__
        )
        if reply.site != self.site:
            raise ConfigError(
                f"the token belongs to site {reply.site!r}, but this agent is configured as site {self.site!r}"
            )
        if reply.run_id:
            self._event("joined", run=reply.run_id, protocol=f"{reply.protocol[0]}.{reply.protocol[1]}")
        return reply

    def _serve_run(self, session: RunSession) -> None:
        while True:
            self.heartbeat.set(session.run_id, "budget_spent" if self._budget_spent() else "idle")
            try:
                task = self.client.poll(session.run_id, self.settings.poll_wait_s)
            except AggregatorError as error:
                if error.code in ("NOT_FOUND", "FAILED_PRECONDITION", "INVALID_ARGUMENT"):
                    self._event("run unknown to the aggregator; joining again", logging.WARNING, run=session.run_id)
                    self._sleep(self.settings.idle_poll_s)  # never a tight Join/Poll loop if it insists
                    return
                raise
            if isinstance(task, m.WaitTask):
                self._sleep(max(0.05, task.retry_after_s) * random.uniform(1.0, 1.2))
            elif isinstance(task, m.DoneTask):
                self._finish(session, task)
                return
            elif isinstance(task, m.TrainTask):
                self._train(session, task)
            else:  # a phase of a secure round (docs/design.md §4.6)
                self.secure.handle(session, task)

    # --- per run ----------------------------------------------------------------------------------------

    def _prepare(self, run_id: str, config: RunConfig, images: LabeledImages) -> RunSession:
        if self._session is not None:
            if self._session.run_id == run_id:
                return self._session
            # A later run: list the site again, so images added meanwhile take part (the cache embeds only them).
            images = load_site_images(self.settings.data)
            report_skipped(images.skipped, self.site, self.settings.state_dir, "scan")
        self.heartbeat.set(run_id, "embedding")
        self._session = prepare_session(
            self.settings, run_id, config, images, self.device, progress=self._embed_progress(run_id)
        )
        return self._session

    def _enter_run(self, session: RunSession) -> None:
        state = self.state
        if state.run_id != session.run_id:
            self._event("run joined", run=session.run_id, previous=state.run_id or None, rounds=session.config.rounds)
            state.run_id, state.run_done, state.residual, state.last_round = session.run_id, False, None, 0
            state.privacy = {}  # the budget is per run (docs/design.md §3.15)
            if state.pending is not None:
                self._event("update of a finished run dropped", logging.WARNING, run=state.pending.run_id)
                state.pending = None
        head = compatible_head(
            state.head, session.data.classes, state.head_classes, session.config.embed_dim, session.head_hidden
        )
        if head is None and state.head is not None:
            self._event("saved head does not fit this run; starting a new one", logging.WARNING, run=session.run_id)
        state.head, state.head_classes = head, list(session.data.classes)
        self.store.save(state)

    def _train_locally(
        self, session: RunSession, round_number: int, fam_version: int, **event_fields: object
    ) -> tuple[RoundOutcome, RoundPlan | None] | None:
        """The training step of a plain and a secure round: privacy gate, heartbeat, train, abandonment check.

        The outcome and the DP-SGD plan to charge once the update is committed; ``None`` when the privacy gate
        refuses the round or the aggregator abandoned it while this site trained.
        """
        state = self.state
        assert state.fam is not None
        allowed, plan = self._privacy_gate(session, round_number)
        if not allowed:
            return None
        self.heartbeat.set(session.run_id, "training", round_number)
        self._event(
            "training", logging.INFO, run=session.run_id, round=round_number, version=fam_version, **event_fields
        )
        outcome = train_round(
            session.data,
            session.prototypes,
            session.record.logit_scale,
            session.config,
            round_number=round_number,
            global_fam=state.fam,
            head=state.head,
            residual=state.residual,
            seed=self.settings.train_seed,
            device=self.device,
            privacy=plan,
        )
        if self.heartbeat.abandoned(session.run_id, round_number):
            self._event("round abandoned; work dropped", logging.WARNING, run=session.run_id, round=round_number)
            return None
        return outcome, plan

    def _train(self, session: RunSession, task: m.TrainTask) -> None:
        state = self.state
        if self._budget_spent():  # keeps serving its last bundle; waits for the run to end
            self._sleep(self.settings.idle_poll_s)
            return
        if state.fam is None or state.fam_version != task.fam_version:
            self._adopt(session, task.fam_version)
        pending = state.pending
        if pending is not None and (pending.round, pending.base_version) == (task.round, task.fam_version):
            self._submit_pending()
            return
        trained = self._train_locally(session, task.round, task.fam_version)
        if trained is None:
            return
        outcome, plan = trained
        self._event(
            "round trained",
            run=session.run_id,
            round=task.round,
            version=task.fam_version,
            seconds=round(outcome.seconds, 3),
            bytes=len(outcome.payload),
            rows_sent=sum(outcome.stats.rows_sent.values()),
            epsilon=None if outcome.privacy is None else round(outcome.privacy.epsilon, 4),
            **_fields({k: v for k, v in (outcome.validation or outcome.report).items() if k.startswith("val_")}),
        )
        # Committed before the first upload attempt: a crash from here on resends exactly these bytes.
        state.head, state.head_classes = outcome.head, list(session.data.classes)
        state.pending = PendingUpdate(
            run_id=session.run_id,
            round=task.round,
            base_version=task.fam_version,
            # Under DP with uniform weighting N is not needed, so it is not sent (docs/design.md §3.15).
            num_samples=1 if plan is not None and session.config.weighting == "uniform" else outcome.num_samples,
            metrics=outcome.report,
            codec=session.config.codec.to_dict(),
            sha256=outcome.sha256,
            payload=outcome.payload,
            residual=outcome.residual,
            privacy=None if outcome.privacy is None else outcome.privacy.to_dict(),
        )
        self._charge(plan)  # in the same commit as the update that spends it: never twice, never lost
        self.store.save(state)
        self._submit_pending()

    def _submit_pending(self) -> None:
        state = self.state
        pending = state.pending
        assert pending is not None
        header = m.UpdateHeader(
            run_id=pending.run_id,
            round=pending.round,
            base_version=pending.base_version,
            num_samples=pending.num_samples,
            metrics=pending.metrics,
            codec=CodecConfig.from_dict(pending.codec),
            sha256=pending.sha256,
            total_bytes=len(pending.payload),
            site=self.site,
            privacy=None if pending.privacy is None else PrivacyLedger.from_dict(pending.privacy),
        )
        self.heartbeat.set(pending.run_id, "uploading", pending.round)
        try:
            reply = self.client.submit(header, pending.payload)
        except AggregatorError as error:
            if error.code not in _DROP_UPDATE:
                raise
            level = logging.WARNING if error.code in ("FAILED_PRECONDITION", "NOT_FOUND") else logging.ERROR
            self._event(
                "update dropped",
                level,
                run=pending.run_id,
                round=pending.round,
                reason=_DROP_UPDATE[error.code],
                code=error.code,
                detail=error.details,
            )
        else:
            if reply.accepted:
                state.residual, state.last_round = pending.residual, pending.round
                self._event(
                    "update accepted",
                    run=pending.run_id,
                    round=pending.round,
                    version=pending.base_version,
                    bytes=len(pending.payload),
                    samples=pending.num_samples,
                    duplicate=reply.duplicate or None,
                )
            else:
                self._event("update not accepted", logging.WARNING, run=pending.run_id, detail=reply.message)
        state.pending = None
        self.store.save(state)

    def _adopt(self, session: RunSession, version: int) -> None:
        """Download a new global FAM version, evaluate it with the head, publish the bundle, commit."""
        _, data = self.client.get_model(version)
        state = self.state
        state.fam, state.fam_version = to_torch(fam_from_bytes(data, session.config.embed_dim)), version
        features, labels = session.data.part("val")
        metrics, calibration = evaluate_and_calibrate(
            features,
            labels,
            session.data.classes,
            session.prototypes,
            session.record.logit_scale,
            state.fam,
            state.head,
            session.head_hidden,
        )
        metrics["majority_acc"] = majority_rate(labels)  # local only: the bar "above chance" means
        bundle = publish_bundle(
            self.settings.bundle_root,
            self.site,
            backbone=session.record,
            classes=session.data.classes,
            prompts=session.prompts,
            prototypes=session.prototypes,
            fam=state.fam,
            fam_version=version,
            head=state.head,
            head_hidden=session.head_hidden,
            metrics=metrics,
            keep=self.settings.keep_bundles,
            run_id=session.run_id,
            fam_privacy=self._fam_guarantee(session),
            calibration=calibration,
        )
        state.metrics, state.metrics_version, state.bundle_version = metrics, version, bundle.version
        self.store.save(state)
        self._event("model adopted", run=session.run_id, version=version, **_fields(metrics, "val_"))

    def _finish(self, session: RunSession, done: m.DoneTask) -> None:
        state = self.state
        spent = self._budget_spent()  # then the last bundle it published stays the one it serves
        if not spent and done.final_version and (state.fam is None or done.final_version != state.fam_version):
            self._adopt(session, done.final_version)
        state.run_done, state.pending = True, None
        self.store.save(state)
        self._event(
            "run finished",
            run=session.run_id,
            version=state.fam_version,
            reason=done.reason,
            **_fields(state.metrics, "val_"),
        )

    # --- privacy budget -------------------------------------------------------------------------------

    def _budget_spent(self) -> bool:
        return bool(self.state.privacy.get("budget_spent"))

    def _privacy_gate(self, session: RunSession, round_number: int) -> tuple[bool, RoundPlan | None]:
        """Whether this site may take part in the round, and its DP-SGD plan under record-level DP.

        Used by plain and secure rounds alike (docs/design.md §6.5): the site's budget decides either way.
        """
        if self.settings.max_epsilon is not None and not session.config.privacy.record_level:
            message = "this site requires differential privacy (max_epsilon is set); the run trains without it"
            self._stop_contributing(session, round_number, message)
            return False, None
        if not session.config.privacy.record_level:
            return True, None
        plan = self._privacy_plan(session, round_number)
        return plan is not None, plan

    def _charge(self, plan: RoundPlan | None) -> None:
        """Record the round's privacy cost in the state; the caller saves it before anything leaves the site."""
        if plan is None:
            return
        history = self.state.privacy.setdefault("history", [])
        history.append({"sample_rate": plan.sample_rate, "sigma": plan.sigma, "steps": plan.steps})
        self.state.privacy["ledger"] = plan.ledger.to_dict()

    def _privacy_plan(self, session: RunSession, round_number: int) -> RoundPlan | None:
        """This round's DP-SGD plan, or ``None`` after recording that the budget allows no further round."""
        config, state = session.config.privacy, self.state
        if self.settings.max_epsilon is not None and self.settings.max_epsilon < config.target_epsilon:
            config = dataclasses.replace(config, target_epsilon=self.settings.max_epsilon)  # the site's own cap
        num_samples = int(session.data.part("train")[1].numel())
        epochs = session.config.train.local_epochs
        if state.privacy.get("sigma") is None:
            state.privacy["sigma"] = plan_sigma(config, num_samples, session.config.rounds, epochs)
        history = history_from(state.privacy.get("history", []))
        plan = next_round(config, num_samples, float(state.privacy["sigma"]), history, epochs)
        if isinstance(plan, RoundPlan):
            return plan
        self._stop_contributing(
            session,
            round_number,
            plan.message(),
            epsilon=round(plan.epsilon_spent, 4),
            epsilon_next=round(plan.epsilon_next, 4),
            target_epsilon=plan.target_epsilon,
        )
        return None

    def _stop_contributing(self, session: RunSession, round_number: int, reason: str, **fields: object) -> None:
        self.state.privacy["budget_spent"] = reason
        self.store.save(self.state)
        self._event(
            "privacy budget spent; no longer contributing to this run (the last bundle keeps serving)",
            logging.WARNING,
            run=session.run_id,
            round=round_number,
            reason=reason,
            **fields,
        )
        self.heartbeat.set(session.run_id, "budget_spent")
        try:  # tell the aggregator now rather than at the next beat, so it stops waiting for this site
            self.client.heartbeat(session.run_id, "budget_spent", 0)
        except AggregatorError as error:
            self._event(
                "could not report the spent budget yet; the heartbeat repeats it", logging.DEBUG, code=error.code
            )

    def _fam_guarantee(self, session: RunSession) -> PrivacyGuarantee | None:
        """The FAM's guarantee for this site's records: the latest charged ledger (ε = 0 before any round)."""
        config = session.config.privacy
        if not config.record_level:
            return None
        ledger = self.state.privacy.get("ledger")
        if ledger:
            return PrivacyGuarantee(float(ledger["epsilon"]), float(ledger["delta"]))
        num_samples = int(session.data.part("train")[1].numel())
        return PrivacyGuarantee(0.0, config.delta_for(num_samples))

    # --- helpers ----------------------------------------------------------------------------------------

    def _embed_progress(self, run_id: str) -> Callable[[int, int], None]:
        marks: set[int] = set()

        def progress(done: int, total: int) -> None:
            if self.stop.is_set():
                raise AgentStopped  # the cache keeps every finished batch; the next start goes on from there
            tenth = 10 * done // max(total, 1)
            if tenth not in marks:
                marks.add(tenth)
                self._event("embedding", run=run_id, done=done, total=total)

        return progress

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise AgentStopped

    def _event(self, message: str, level: int = logging.INFO, **fields: object) -> None:
        event(log, message, level, site=self.site, **fields)


def _fields(metrics: Mapping[str, float], prefix: str = "") -> dict[str, Any]:
    """Metrics as log fields (typed loosely so they can sit beside ``level`` in ``_event``'s keywords)."""
    return {f"{prefix}{name}": round(value, 4) for name, value in metrics.items()}
