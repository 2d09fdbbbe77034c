"""Per-site state a shard keeps between rounds (private heads, codec residuals), only for sites that have it.

A site that has never trained holds nothing: its first head is ``build_head`` with its seed, rebuilt when it
first trains, and its residual is "none yet", exactly what a real agent passes to ``encode_update`` before its
first upload. Each site's tensors are stored as its own small copies, so the shard's stacked training tensors
(and the optimiser state of a round) are freed as soon as the round ends; a real agent does not keep its
optimiser between rounds either (``train_local_round`` builds a new one).

``directory`` set: each site's state lives in one file there and is read back memory-mapped, so state that
outgrows the machine's memory sits in the page cache, which the kernel can evict, instead of anonymous memory.
Values are stored in float32 either way: fp16 would change what the codec sends next round.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import torch


class SiteStateStore:
    def __init__(self, kind: str, directory: Path | None = None) -> None:
        self.kind = kind
        self.directory = directory
        self._memory: dict[int, dict[str, torch.Tensor]] = {}
        self._bytes: dict[int, int] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def _path(self, site: int) -> Path:
        assert self.directory is not None
        return self.directory / f"{self.kind}-{site:07d}.pt"

    def get(self, site: int) -> dict[str, torch.Tensor] | None:
        if site not in self._bytes:
            return None
        if self.directory is None:
            return self._memory[site]
        state: dict[str, torch.Tensor] = torch.load(self._path(site), mmap=True, weights_only=True)
        return state

    def put(self, site: int, state: Mapping[str, torch.Tensor]) -> None:
        # Own contiguous copies (a view would keep a whole stacked shard tensor alive), on the shard's device
        # while in memory, on the CPU for a file.
        device = None if self.directory is None else "cpu"
        own = {
            name: tensor.detach().to(device, copy=True, memory_format=torch.contiguous_format)
            for name, tensor in state.items()
        }
        self._bytes[site] = sum(t.numel() * t.element_size() for t in own.values())
        if self.directory is None:
            self._memory[site] = own
        else:
            torch.save(own, self._path(site))

    def __contains__(self, site: int) -> bool:
        return site in self._bytes

    def __len__(self) -> int:
        return len(self._bytes)

    def memory_bytes(self) -> int:
        """Bytes held in this process's memory (0 when the state lives in files)."""
        return 0 if self.directory is not None else sum(self._bytes.values())

    def disk_bytes(self) -> int:
        return sum(self._bytes.values()) if self.directory is not None else 0

    def close(self) -> None:
        """Forget every site's state and delete its files (the state is the run's scratch space)."""
        if self.directory is not None:
            for site in self._bytes:
                self._path(site).unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # only when nothing else is left in it
                self.directory.rmdir()
        self._memory.clear()
        self._bytes.clear()
