"""The numpy boundary of the federation code: torch tensors in, numpy arrays out, without importing torch.

Decoding, validation and aggregation run on numpy so that the aggregator needs no torch (docs/design.md
§2). The agent trains in torch and hands its tensors in as they are: anything with ``detach``/``cpu``/
``numpy`` (a ``torch.Tensor``) is copied to a CPU array here; torch is imported only to go back
(``to_torch``), which only torch callers ask for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def is_torch(value: object) -> bool:
    """True for a ``torch.Tensor`` (checked by its type's module, so torch is never imported here)."""
    return type(value).__module__.startswith("torch") and hasattr(value, "detach")


def to_numpy(value: Any) -> Array:
    """A numpy view or copy of ``value`` (a numpy array, a torch tensor on any device, or array-like)."""
    if is_torch(value):
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def to_torch(arrays: Mapping[str, Array]) -> dict[str, Any]:
    """``{name: torch.Tensor}`` sharing nothing with ``arrays``: for torch callers (agent, simulation)."""
    import torch  # only torch callers get here; the aggregator never does

    return {name: torch.from_numpy(np.array(array, copy=True)) for name, array in arrays.items()}
