"""Local state: everything survives a restart, saves are atomic, damage and misuse are refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.model.head import build_head, head_state
from hospital_agent.state import STATE_FILE, AgentState, PendingUpdate, StateError, StateStore


def full_state(site: str = "site-a") -> AgentState:
    head = head_state(build_head(16, 3, hidden=8, seed=1))
    fam = fam_state(build_fam(16, seed=2))
    residual = {name: torch.full_like(tensor, 0.5) for name, tensor in fam.items()}
    return AgentState(
        site=site,
        run_id="run-1",
        fam_version=7,
        fam=fam,
        head=head,
        head_classes=["a", "b", "c"],
        residual=residual,
        last_round=3,
        metrics={"ensemble_acc": 0.75, "macro_f1": 0.5},
        metrics_version=7,
        bundle_version="20260101T000000000000Z-fam7",
        pending=PendingUpdate(
            run_id="run-1",
            round=4,
            base_version=7,
            num_samples=90,
            metrics={"train_loss": 1.25},
            codec={"rho": 0.2, "quantization": "int8", "compression": "zstd"},
            sha256="ab" * 32,
            payload=b"\x00payload bytes\xff",
            residual={name: tensor * 2 for name, tensor in residual.items()},
        ),
    )


def assert_same_tensors(left: dict[str, torch.Tensor] | None, right: dict[str, torch.Tensor] | None) -> None:
    assert left is not None and right is not None and set(left) == set(right)
    for name in left:
        assert left[name].dtype == right[name].dtype and torch.equal(left[name], right[name]), name


def test_state_survives_a_restart(tmp_path: Path) -> None:
    saved = full_state()
    StateStore(tmp_path).save(saved)
    loaded = StateStore(tmp_path).load("site-a")  # a new store, as after a restart
    assert_same_tensors(loaded.head, saved.head)  # BatchNorm's int64 counter included
    assert_same_tensors(loaded.fam, saved.fam)
    assert_same_tensors(loaded.residual, saved.residual)
    assert (loaded.run_id, loaded.fam_version, loaded.last_round) == ("run-1", 7, 3)
    assert loaded.metrics == saved.metrics and loaded.head_classes == ["a", "b", "c"]
    assert loaded.pending is not None and saved.pending is not None
    assert loaded.pending.payload == saved.pending.payload
    assert_same_tensors(loaded.pending.residual, saved.pending.residual)
    assert (loaded.pending.round, loaded.pending.sha256) == (4, "ab" * 32)


def test_saves_are_atomic_and_collect_old_files(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    state = full_state()
    store.save(state)
    first = {p.name for p in tmp_path.iterdir()}
    (tmp_path / ".state.json.dead.tmp").write_text("an interrupted save")  # left by a crash mid-write
    state.pending = None
    assert state.head is not None
    state.head = {name: tensor + 1 if tensor.is_floating_point() else tensor for name, tensor in state.head.items()}
    store.save(state)
    files = {p.name for p in tmp_path.iterdir()}
    assert not any(name.startswith(("update-", "pending-residual-")) for name in files)
    assert not any(name.endswith(".tmp") for name in files)
    heads = {name for name in files if name.startswith("head-")}
    assert len(heads) == 1 and heads.isdisjoint(first)  # the new head replaced the old file
    assert store.load("site-a").pending is None


def test_damage_and_misuse_are_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    assert store.load("site-a") == AgentState(site="site-a")  # no state yet: a fresh one
    store.save(full_state())
    with pytest.raises(StateError, match="belongs to site 'site-a', not 'site-b'"):
        store.load("site-b")
    head_file = next(tmp_path.glob("head-*.safetensors"))
    head_file.write_bytes(head_file.read_bytes()[:-4] + b"XXXX")
    with pytest.raises(StateError, match="is damaged"):
        store.load("site-a")
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(StateError, match="not valid JSON"):
        store.load("site-a")
    (tmp_path / STATE_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(StateError, match="is not a version-1"):
        store.load("site-a")


def test_one_agent_per_state_dir(tmp_path: Path) -> None:
    with StateStore(tmp_path).lock(), pytest.raises(StateError, match="in use by another agent"):
        StateStore(tmp_path).lock().__enter__()
    with StateStore(tmp_path).lock():  # released: usable again
        pass
