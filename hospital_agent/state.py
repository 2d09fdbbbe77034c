"""What the agent keeps on disk so that a restart (even after SIGKILL or power loss) loses nothing.

``<state_dir>/state.json`` is the commit point. Tensors (the private head, the error-feedback residual, the
current global FAM) and the pending update's payload live beside it in content-named files
(``head-<sha>.safetensors``, ``update-<sha>.bin``...) that ``state.json`` names with their full sha256. A save
writes the new blobs first (temporary file, fsync, ``os.replace``), then ``state.json`` the same way, then
removes blobs nothing names any more. A crash at any point leaves the previous or the new state, never a mix.
Never pickle: tensors are safetensors, everything else JSON.

The *pending* update makes submission idempotent across restarts: it is committed before the first upload
attempt and cleared once the aggregator acknowledged it, so an agent killed mid-upload resends the very same
bytes, which the aggregator acknowledges as a duplicate if it already stored them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fedmedclip.atomic_files import write_atomic

STATE_FILE = "state.json"
LOCK_FILE = ".lock"
FORMAT = "fedmedclip-agent-state"
FORMAT_VERSION = 1
_BLOB = re.compile(r"^(fam|head|residual|pending-residual|update)-[0-9a-f]{16}\.(safetensors|bin)$")


class StateError(RuntimeError):
    """The state folder is unreadable, damaged, or in use by another agent."""


@dataclass
class PendingUpdate:
    """An update trained and committed locally but not yet acknowledged by the aggregator."""

    run_id: str
    round: int
    base_version: int
    num_samples: int
    metrics: dict[str, float]
    codec: dict[str, Any]  # CodecConfig.to_dict() of the run
    sha256: str
    payload: bytes
    residual: dict[str, torch.Tensor]  # becomes the state's residual once the update is accepted
    privacy: dict[str, Any] | None = None  # PrivacyLedger.to_dict() sent in the header; None without DP


@dataclass
class AgentState:
    site: str
    run_id: str = ""
    run_done: bool = False
    fam_version: int = 0  # the global FAM version held in ``fam`` (0: none yet)
    fam: dict[str, torch.Tensor] | None = None
    head: dict[str, torch.Tensor] | None = None  # the private head: never leaves this folder
    head_classes: list[str] = field(default_factory=list)  # the label space the head was trained on
    residual: dict[str, torch.Tensor] | None = None  # error feedback of the current run
    last_round: int = 0  # the last round whose update the aggregator accepted
    metrics: dict[str, float] = field(default_factory=dict)  # validation of the published model
    metrics_version: int = 0  # the FAM version those metrics were measured with
    bundle_version: str = ""
    pending: PendingUpdate | None = None
    updated_at: str = ""
    # Record-level DP of the current run (docs/design.md §3.15): "sigma", "history" (one entry of
    # sample_rate, sigma, steps per round the budget was charged for), "ledger" (the latest guarantee) and
    # "budget_spent" (why the site stopped contributing; empty while it still may).
    privacy: dict[str, Any] = field(default_factory=dict)


class StateStore:
    """Loads and atomically saves ``AgentState`` under one folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the folder for one agent process (released by the kernel even after SIGKILL)."""
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        handle = (self.directory / LOCK_FILE).open("a+")
        try:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(f"state_dir {self.directory} is in use by another agent process") from None
            yield
        finally:
            handle.close()

    def exists(self) -> bool:
        return (self.directory / STATE_FILE).is_file()

    def summary(self) -> dict[str, Any] | None:
        """``state.json`` as it is, without reading tensors (for ``status``, while an agent may be writing)."""
        try:
            data = json.loads((self.directory / STATE_FILE).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StateError(f"cannot read {self.directory / STATE_FILE}: {error}") from error
        return data if isinstance(data, dict) else None

    def load(self, site: str) -> AgentState:
        """The saved state, or a fresh one; ``StateError`` for a damaged folder or another site's state."""
        path = self.directory / STATE_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return AgentState(site=site)
        except OSError as error:
            raise StateError(f"cannot read {path}: {error.strerror or error}") from error
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StateError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("format_version") != FORMAT_VERSION:
            raise StateError(f"{path} is not a version-{FORMAT_VERSION} {FORMAT} file")
        if data.get("site") != site:
            raise StateError(
                f"{path} belongs to site {data.get('site')!r}, not {site!r}; use a separate state_dir per site"
            )
        try:
            return self._decode(data)
        except (KeyError, TypeError, ValueError) as error:
            raise StateError(f"{path} is malformed: {error}") from error

    def save(self, state: AgentState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        state.updated_at = datetime.now(UTC).isoformat(timespec="seconds")
        pending = state.pending
        data: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "site": state.site,
            "run_id": state.run_id,
            "run_done": state.run_done,
            "fam_version": state.fam_version,
            "fam": self._put_tensors("fam", state.fam),
            "head": self._put_tensors("head", state.head),
            "head_classes": list(state.head_classes),
            "residual": self._put_tensors("residual", state.residual),
            "last_round": state.last_round,
            "metrics": dict(state.metrics),
            "metrics_version": state.metrics_version,
            "bundle_version": state.bundle_version,
            "updated_at": state.updated_at,
            "privacy": dict(state.privacy),
            "pending": None
            if pending is None
            else {
                "run_id": pending.run_id,
                "round": pending.round,
                "base_version": pending.base_version,
                "num_samples": pending.num_samples,
                "metrics": dict(pending.metrics),
                "codec": dict(pending.codec),
                "sha256": pending.sha256,
                "payload": self._put_blob("update", "bin", pending.payload),
                "residual": self._put_tensors("pending-residual", pending.residual),
                "privacy": pending.privacy,
            },
        }
        write_atomic(self.directory / STATE_FILE, json.dumps(data, indent=1, allow_nan=False).encode())
        self._collect(data)

    # --- blobs ------------------------------------------------------------------------------------------

    def _put_tensors(self, kind: str, tensors: Mapping[str, torch.Tensor] | None) -> dict[str, str] | None:
        if tensors is None:
            return None
        cpu = {name: value.detach().to("cpu").contiguous() for name, value in tensors.items()}
        return self._put_blob(kind, "safetensors", save_safetensors(cpu))

    def _put_blob(self, kind: str, suffix: str, data: bytes) -> dict[str, str]:
        digest = hashlib.sha256(data).hexdigest()
        name = f"{kind}-{digest[:16]}.{suffix}"
        target = self.directory / name
        if not target.is_file() or target.stat().st_size != len(data):
            write_atomic(target, data)
        return {"file": name, "sha256": digest}

    def _get_blob(self, ref: Mapping[str, str]) -> bytes:
        name = ref["file"]
        if not _BLOB.fullmatch(name):
            raise ValueError(f"unexpected blob name {name!r}")
        path = self.directory / name
        try:
            data = path.read_bytes()
        except OSError as error:
            raise StateError(f"state file {path} is missing or unreadable: {error.strerror or error}") from error
        if hashlib.sha256(data).hexdigest() != ref["sha256"]:
            raise StateError(f"state file {path} is damaged (sha256 differs from {STATE_FILE})")
        return data

    def _get_tensors(self, ref: Mapping[str, str] | None) -> dict[str, torch.Tensor] | None:
        return None if ref is None else dict(load_safetensors(self._get_blob(ref)))

    def _decode(self, data: Mapping[str, Any]) -> AgentState:
        raw_pending = data.get("pending")
        pending = None
        if raw_pending is not None:
            residual = self._get_tensors(raw_pending["residual"])
            pending = PendingUpdate(
                run_id=str(raw_pending["run_id"]),
                round=int(raw_pending["round"]),
                base_version=int(raw_pending["base_version"]),
                num_samples=int(raw_pending["num_samples"]),
                metrics={str(k): float(v) for k, v in raw_pending["metrics"].items()},
                codec=dict(raw_pending["codec"]),
                sha256=str(raw_pending["sha256"]),
                payload=self._get_blob(raw_pending["payload"]),
                residual=residual or {},
                privacy=raw_pending.get("privacy"),
            )
        return AgentState(
            site=str(data["site"]),
            run_id=str(data["run_id"]),
            run_done=bool(data["run_done"]),
            fam_version=int(data["fam_version"]),
            fam=self._get_tensors(data["fam"]),
            head=self._get_tensors(data["head"]),
            head_classes=[str(c) for c in data["head_classes"]],
            residual=self._get_tensors(data["residual"]),
            last_round=int(data["last_round"]),
            metrics={str(k): float(v) for k, v in data["metrics"].items()},
            metrics_version=int(data["metrics_version"]),
            bundle_version=str(data["bundle_version"]),
            pending=pending,
            updated_at=str(data["updated_at"]),
            privacy=dict(data.get("privacy") or {}),  # absent in states written before the privacy ledger
        )

    def _collect(self, data: Mapping[str, Any]) -> None:
        """Remove blobs the committed state no longer names, and temporary files of interrupted saves."""
        keep = set(_referenced(data))
        for entry in os.scandir(self.directory):
            stale_temporary = entry.name.startswith(".") and entry.name.endswith(".tmp")
            if (stale_temporary or (_BLOB.fullmatch(entry.name) and entry.name not in keep)) and entry.is_file():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _referenced(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        if "file" in value and "sha256" in value:
            yield str(value["file"])
        for item in value.values():
            yield from _referenced(item)
