"""Shared fixtures. Tests never touch the network: the hub is forced offline before anything imports it."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from fedmedclip.model.backbone import TINY_MODEL, Backbone, BackboneSpec, load_backbone

torch.set_num_threads(int(os.environ.get("FEDMEDCLIP_TEST_TORCH_THREADS", max(1, min(2, os.cpu_count() or 1)))))


@pytest.fixture(scope="session")
def tiny_spec() -> BackboneSpec:
    return BackboneSpec(model=TINY_MODEL, weights=None, seed=0)


@pytest.fixture(scope="session")
def tiny_backbone(tiny_spec: BackboneSpec) -> Backbone:
    """A ~3M-parameter random-init CLIP with 64-px images and 64-d embeddings, on the CPU."""
    return load_backbone(tiny_spec, device="cpu")


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Servers started in-process set torch's global thread count; keep that from leaking into other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
