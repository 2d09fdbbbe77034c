"""The demo's script: synth data → aggregator → three agents → a run → inference API → REST predictions.

Every service is the real one in its own process, talking over loopback sockets; credentials are generated
for this run only. Nothing here imports a service package: the services are driven by their command lines
and the REST API, as an operator and a clinician would.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from fedmedclip.data.imagefolder import ImageRecord, scan_imagefolder
from fedmedclip.data.splits import split_indices
from fedmedclip.data.synth import SynthConfig, generate
from fedmedclip.demo.history import round_history
from fedmedclip.demo.processes import Service, ServiceError, child_env, run_command
from fedmedclip.demo.report import write_report
from fedmedclip.demo.scoring import SiteScore, score_site
from fedmedclip.model.backbone import BackboneSpec, WeightsUnavailableError, resolve_weights

AGGREGATOR_READY = re.compile(r"aggregator listening on \S+:(\d+)")
API_READY = re.compile(r"inference API serving on (http\S+)")
SPLIT_SEED = 0


@dataclass(frozen=True)
class DemoSettings:
    out_dir: Path
    model: str = "ViT-B-32"
    weights: str = "openai"
    rounds: int = 3
    sites: int = 3
    images_per_site: int = 400  # 80 held-out test images per site: one image is 1.25 points, not 6
    image_size: int = 96
    seed: int = 0
    timeout_s: float = 900.0


@dataclass
class DemoReport:
    backbone: dict[str, Any]
    rounds: int
    upload_bytes_per_round: list[dict[str, int]] = field(default_factory=list)
    sites: dict[str, SiteScore] = field(default_factory=dict)
    wall_time_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)  # round_history(): one entry per closed round

    def to_json(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone,
            "rounds_configured": self.rounds,
            "rounds": self.history,
            "upload_bytes_per_round": self.upload_bytes_per_round,
            "sites": {name: score.to_json() for name, score in self.sites.items()},
            "wall_time_s": round(self.wall_time_s, 1),
        }


def choose_weights(settings: DemoSettings, warn: Callable[[str], None]) -> tuple[str, bool]:
    """The configured weights when they load here; otherwise, loudly, a random-init backbone."""
    try:
        resolve_weights(BackboneSpec(settings.model, settings.weights))
    except WeightsUnavailableError as error:
        warn(str(error))
        warn(
            f"FALLING BACK TO A RANDOM-INIT {settings.model}: the system runs end to end, but the accuracies "
            "say nothing about pretrained CLIP."
        )
        return "random", False
    return settings.weights, settings.weights.strip().lower() not in {"random", "none", ""}


def _embed_dim(model: str) -> int:
    import open_clip

    config = open_clip.get_model_config(model)
    if config is None:
        raise ValueError(f"unknown open_clip model {model!r}")
    return int(config["embed_dim"])


def _test_records(root: Path) -> list[ImageRecord]:
    """The site's held-out images: the test part of the same seeded split its agent uses."""
    images = scan_imagefolder(root)
    split = split_indices(images.labels, seed=SPLIT_SEED)
    return [images.records[i] for i in split.test]


class Demo:
    def __init__(self, settings: DemoSettings, say: Callable[[str], None], warn: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say
        self.warn = warn
        self.out = settings.out_dir.resolve()
        self.logs = self.out / "logs"
        self.services: list[Service] = []
        self.admin_token = secrets.token_urlsafe(32)
        self.env = child_env({"FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN": self.admin_token})
        self.aggregator_target = ""

    # --- steps ----------------------------------------------------------------------------------------------
    def prepare(self) -> Path:
        if (
            self.out.exists()
            and any(self.out.iterdir())
            and not (self.out / "report.json").exists()
            and not (self.out / "synth").exists()
        ):
            raise ServiceError(f"{self.out} is not empty and is not an earlier demo's folder; choose another --out-dir")
        for stale in ("aggregator", "agents", "bundles", "logs"):
            _remove_tree(self.out / stale)
        self.logs.mkdir(parents=True, exist_ok=True)
        data = self.out / "synth"
        config = SynthConfig(
            sites=self.settings.sites,
            images_per_site=self.settings.images_per_site,
            image_size=self.settings.image_size,
            label_skew=5.0,
            seed=self.settings.seed,
        )
        summary = generate(config, data)
        self.say(f"synthetic data: {summary.total_images} images, {len(summary.counts)} sites → {data}")
        return data

    def start_aggregator(self) -> None:
        database = self.out / "aggregator" / "aggregator.sqlite3"
        database.parent.mkdir(parents=True, exist_ok=True)
        service = Service(
            "aggregator",
            [
                "aggregator_service",
                "serve",
                "--port",
                "0",
                "--insecure-loopback",
                "--database-url",
                f"sqlite:///{database}",
                "--metrics-port",
                "0",
            ],
            self.logs / "aggregator.log",
            self.env,
        )
        self.services.append(service)
        match = service.start(AGGREGATOR_READY, timeout_s=120)
        assert match is not None
        self.aggregator_target = f"127.0.0.1:{match.group(1)}"
        self.say(f"aggregator on {self.aggregator_target} (SQLite {database})")

    def _admin(self, *args: str) -> str:
        return run_command(
            ["aggregator_service", *args, "--server", self.aggregator_target, "--insecure-loopback"],
            self.env,
            self.logs / "admin.log",
        )

    def enrol(self, sites: list[str]) -> dict[str, str]:
        tokens = {site: self._admin("sites", "add", site).strip().split()[-1] for site in sites}
        self.say(f"enrolled {', '.join(sites)} (tokens shown once, kept in the agents' environment only)")
        return tokens

    def start_run(self, weights: str) -> str:
        run_file = self.out / "aggregator" / "run.yaml"
        run = {
            "embed_dim": _embed_dim(self.settings.model),
            "rounds": self.settings.rounds,
            "min_sites": self.settings.sites,
            "round_timeout_s": self.settings.timeout_s,
            "backbone": {"model": self.settings.model, "weights": weights, "seed": self.settings.seed},
        }
        run_file.write_text(yaml.safe_dump(run, sort_keys=False))
        run_id = self._admin("runs", "start", "--run-config", str(run_file), "--name", "demo").strip().split()[-1]
        self.say(f"run {run_id}: {self.settings.rounds} rounds, quorum {self.settings.sites}")
        return run_id

    def start_agents(self, data: Path, tokens: dict[str, str], weights: str) -> None:
        for site, token in tokens.items():
            home = self.out / "agents" / site
            home.mkdir(parents=True, exist_ok=True)
            config = {
                "site": site,
                "aggregator": self.aggregator_target,
                "token": "${FEDMEDCLIP_AGENT_TOKEN}",
                "insecure_loopback": True,
                "data": {"adapter": "imagefolder", "root": str(data / site), "split_seed": SPLIT_SEED},
                "backbone": {"model": self.settings.model, "weights": weights, "seed": self.settings.seed},
                "state_dir": str(home / "state"),
                "bundle_root": str(self.out / "bundles"),
                "device": "auto",
                "embed_workers": 0,
                "poll_wait_s": 5,
                "idle_poll_s": 1.0,
            }
            path = home / "agent.yaml"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            env = dict(self.env, FEDMEDCLIP_AGENT_TOKEN=token)
            agent = Service(
                f"agent {site}", ["hospital_agent", "run", "--config", str(path)], self.logs / f"agent-{site}.log", env
            )
            agent.start()
            self.services.append(agent)
        self.say(f"started {len(tokens)} agents (logs in {self.logs})")

    def wait_for_run(self, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.settings.timeout_s
        seen = 0
        while time.monotonic() < deadline:
            status = json.loads(self._admin("runs", "status", run_id, "--json"))
            closed = [r for r in status.get("rounds", []) if r.get("state") == "ROUND_STATE_CLOSED"]
            if len(closed) > seen:
                seen = len(closed)
                self.say(f"round {seen}/{self.settings.rounds} closed → FAM version {closed[-1].get('output_version')}")
            state = status.get("state", "")
            if state == "RUN_STATE_COMPLETED":
                return dict(status)
            if state in ("RUN_STATE_FAILED", "RUN_STATE_STOPPED"):
                raise ServiceError(f"the run ended as {state}: {status.get('message', '')}")
            for service in self.services:
                if not service.running:
                    raise ServiceError(
                        f"{service.name} exited; its log ({service.log}) ends with:\n"
                        f"{service.log.read_text(errors='replace')[-2000:]}"
                    )
            time.sleep(1.0)
        raise ServiceError(f"the run did not finish within {self.settings.timeout_s:.0f} s")

    def wait_for_bundles(self, sites: list[str]) -> None:
        """Agents publish their last bundle right after the final round closes."""
        deadline = time.monotonic() + 120
        pending = set(sites)
        while pending and time.monotonic() < deadline:
            pending = {s for s in pending if not _bundle_at_round(self.out / "bundles", s, self.settings.rounds)}
            time.sleep(0.5)
        if pending:
            raise ServiceError(f"no final bundle from {sorted(pending)}")

    def start_api(self, weights: str) -> tuple[str, str]:
        key = secrets.token_urlsafe(32)
        keys = [{"name": "demo-clinician", "sha256": hashlib.sha256(key.encode()).hexdigest(), "sites": ["*"]}]
        env = dict(
            self.env,
            FEDMEDCLIP_API_BUNDLE_ROOT=str(self.out / "bundles"),
            FEDMEDCLIP_API_MODEL=self.settings.model,
            FEDMEDCLIP_API_WEIGHTS=weights,
            FEDMEDCLIP_API_SEED=str(self.settings.seed),
            FEDMEDCLIP_API_API_KEYS=json.dumps(keys),
        )
        api = Service(
            "inference API",
            ["inference_api", "serve", "--host", "127.0.0.1", "--port", "0"],
            self.logs / "api.log",
            env,
        )
        self.services.append(api)
        match = api.start(API_READY, timeout_s=300)
        assert match is not None
        url = match.group(1)
        self.say(f"inference API on {url}")
        return url, key

    def predict(self, url: str, key: str, data: Path, sites: list[str]) -> dict[str, SiteScore]:
        headers = {"X-API-Key": key}
        scores: dict[str, SiteScore] = {}
        with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
            _wait_ready(client)
            for site in sites:
                records = _test_records(data / site)
                answers: list[dict[str, Any]] = []
                for start in range(0, len(records), 8):
                    batch = records[start : start + 8]
                    files = [("files", (r.path.name, r.path.read_bytes(), "image/png")) for r in batch]
                    response = client.post(f"/v1/sites/{site}/predict", files=files)
                    if response.status_code != 200:
                        raise ServiceError(f"predict for {site} answered {response.status_code}: {response.text}")
                    answers.extend(response.json()["predictions"])
                detail = client.get(f"/v1/sites/{site}")
                calibration = detail.json().get("calibration") if detail.status_code == 200 else None
                scores[site] = score_site([r.class_name for r in records], answers, calibration)
        return scores

    def stop_all(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()


def _wait_ready(client: httpx.Client, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.5)
    raise ServiceError("the inference API never became ready")


def _bundle_at_round(root: Path, site: str, rounds: int) -> bool:
    pointer = root / site / "current"
    if not pointer.is_file():
        return False
    manifest = root / site / pointer.read_text().strip() / "manifest.json"
    try:
        data = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    # Version 1 is the initial FAM; each closed round adds one.
    return int(data.get("fam", {}).get("version", 0)) >= rounds + 1


def _remove_tree(path: Path) -> None:
    import shutil

    if path.exists():
        shutil.rmtree(path)


def upload_bytes(status: dict[str, Any]) -> list[dict[str, int]]:
    """Bytes each site uploaded in each closed round, from the aggregator's run status."""
    rounds = []
    for item in status.get("rounds", []):
        if item.get("state") != "ROUND_STATE_CLOSED":
            continue
        rounds.append(
            {
                p["site"]: int(p.get("payload_bytes", 0))
                for p in item.get("participants", [])
                if p.get("state") == "PARTICIPATION_STATE_ACCEPTED"
            }
        )
    return rounds


def run_demo(settings: DemoSettings, say: Callable[[str], None], warn: Callable[[str], None]) -> DemoReport:
    started = time.monotonic()
    demo = Demo(settings, say, warn)
    weights, pretrained = choose_weights(settings, warn)
    sites = [f"site-{i}" for i in range(1, settings.sites + 1)]
    try:
        data = demo.prepare()
        demo.start_aggregator()
        tokens = demo.enrol(sites)
        run_id = demo.start_run(weights)
        demo.start_agents(data, tokens, weights)
        status = demo.wait_for_run(run_id)
        demo.wait_for_bundles(sites)
        url, key = demo.start_api(weights)
        scores = demo.predict(url, key, data, sites)
    finally:
        demo.stop_all()
    report = DemoReport(
        backbone={
            "name": settings.model,
            "weights": weights,
            "pretrained": pretrained,
        },
        rounds=settings.rounds,
        upload_bytes_per_round=upload_bytes(status),
        sites=scores,
        wall_time_s=time.monotonic() - started,
        history=round_history(status),
    )
    content = report.to_json()
    (demo.out / "report.json").write_text(json.dumps(content, indent=2))
    write_report(content, demo.out)
    return report
