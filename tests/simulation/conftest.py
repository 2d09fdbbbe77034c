from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def small_config() -> dict[str, Any]:
    """A few seconds' simulation: 12 tiny sites in 2 shards, with dropouts and stragglers."""
    return {
        "name": "tiny",
        "seed": 3,
        "sites": {
            "count": 12,
            "train_samples": 24,
            "eval_samples": 8,
            "data": {"kind": "synthetic", "dim": 32, "classes": 3},
        },
        "rounds": 2,
        "participation": 0.75,
        "dropout": 0.1,
        "stragglers": 0.1,
        "train": {"head_hidden": 16, "batch_size": 8},
        "shard_size": 6,
        "threads": 1,
    }
