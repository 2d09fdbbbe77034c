"""The FAM's tensor names and shapes, apart from the torch module so the aggregator can use them without torch."""

from __future__ import annotations

# Names of the FAM's tensors, in a fixed order; the update codec and aggregation validate against these.
FAM_MATRIX_NAMES = ("m1.weight", "m2.weight")
FAM_VECTOR_NAMES = ("m1.bias", "m1.kappa", "m2.bias", "m2.kappa")
FAM_TENSOR_NAMES = ("m1.weight", "m1.bias", "m1.kappa", "m2.weight", "m2.bias", "m2.kappa")


def fam_shapes(dim: int) -> dict[str, tuple[int, ...]]:
    """Expected shape of every FAM tensor for embedding width ``dim``."""
    return {name: ((dim, dim) if name in FAM_MATRIX_NAMES else (dim,)) for name in FAM_TENSOR_NAMES}
