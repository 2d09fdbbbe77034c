"""Content-addressed embedding cache and the embedding pass that fills it (docs/design.md §3.10).

The backbone is frozen and training uses no augmentation, so an image's embedding depends only on the
backbone (model, weights digest, preprocessing: ``Backbone.cache_namespace``) and the image bytes. Vectors
are stored under (namespace, sha256 of the file) and every round after the first trains on cached vectors.
Keying by content, not path, means renamed or copied files are free and an edited file is recomputed.

The store is one SQLite file in WAL mode: safe to read while another process writes, and each batch is one
transaction, so a crash mid-pass loses at most the batch in flight.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from fedmedclip.data.images import ImageDecodeError, decode_image

CACHE_FILE = "embeddings.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS embeddings (
    namespace TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,  -- little-endian float32, dim values
    PRIMARY KEY (namespace, content_sha256)
) WITHOUT ROWID
"""
_LOOKUP = (
    "SELECT content_sha256, dim, vector FROM embeddings"
    " WHERE namespace = ? AND content_sha256 IN (SELECT value FROM json_each(?))"
)
_LOOKUP_CHUNK = 5000  # bounds one query's JSON parameter (~330 KB)
_VECTOR_DTYPE = np.dtype("<f4")


class ImageEncoder(Protocol):
    """What the embedding pass needs from ``fedmedclip.model.backbone.Backbone``."""

    @property
    def cache_namespace(self) -> str: ...

    @property
    def embed_dim(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def preprocess(self, image: Image.Image) -> torch.Tensor: ...

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...


# (path, sha256) of each content to decode, batch size -> batches in any order, every item exactly once.
BatchDecoder = Callable[[list[tuple[Path, str]], int], Iterable["DecodedBatch"]]


class EmbeddingCache:
    """Float32 vectors keyed by (namespace, content sha256) in ``<cache_dir>/embeddings.sqlite``.

    One connection, guarded by a lock, so an agent may share the cache between threads.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.directory = Path(cache_dir)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / CACHE_FILE
        self._lock = threading.Lock()
        # Autocommit mode: transactions are opened explicitly, one per put_many.
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; a lost tail is only recomputed
        self._db.execute(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"embedding cache {self.path} is closed")
        return self._db

    def get_many(self, namespace: str, digests: Iterable[str]) -> dict[str, np.ndarray]:
        """The cached vectors among ``digests`` (missing ones are simply absent from the result)."""
        wanted = list(dict.fromkeys(digests))
        found: dict[str, np.ndarray] = {}
        with self._lock:
            db = self._connection()
            for start in range(0, len(wanted), _LOOKUP_CHUNK):
                # The digests travel as one JSON parameter: no SQL text is built from data.
                chunk = json.dumps(wanted[start : start + _LOOKUP_CHUNK])
                for digest, dim, blob in db.execute(_LOOKUP, (namespace, chunk)):
                    vector = np.frombuffer(blob, dtype=_VECTOR_DTYPE)
                    if vector.size == dim:  # a damaged row is treated as missing and gets recomputed
                        found[digest] = vector.astype(np.float32)
        return found

    def put_many(self, namespace: str, items: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]) -> int:
        """Store vectors in one transaction (all or nothing); returns how many were written."""
        pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
        rows = []
        for digest, vector in pairs:
            array = np.asarray(vector, dtype=_VECTOR_DTYPE)
            if array.ndim != 1 or array.size == 0:
                raise ValueError(f"embedding for {digest} must be a non-empty vector, got shape {array.shape}")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"embedding for {digest} has non-finite values; refusing to cache it")
            rows.append((namespace, digest, int(array.size), array.tobytes()))
        with self._lock:
            db = self._connection()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)", rows)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return len(rows)

    def count(self, namespace: str | None = None) -> int:
        with self._lock:
            db = self._connection()
            if namespace is None:
                row = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            else:
                row = db.execute("SELECT COUNT(*) FROM embeddings WHERE namespace = ?", (namespace,)).fetchone()
        return int(row[0])

    def namespaces(self) -> dict[str, int]:
        """Vectors per namespace: what ``agent status`` shows."""
        with self._lock:
            rows = self._connection().execute("SELECT namespace, COUNT(*) FROM embeddings GROUP BY namespace")
            return {str(name): int(n) for name, n in rows}

    def digests(self) -> set[str]:
        """Every content digest with a vector, in any namespace: bytes the embedding pass has decoded."""
        with self._lock:
            rows = self._connection().execute("SELECT DISTINCT content_sha256 FROM embeddings")
            return {str(digest) for (digest,) in rows}

    def size_bytes(self) -> int:
        """Bytes on disk, write-ahead log included."""
        files = (self.path, self.path.with_name(CACHE_FILE + "-wal"), self.path.with_name(CACHE_FILE + "-shm"))
        return sum(path.stat().st_size for path in files if path.exists())

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class EmbedResult:
    """Embeddings for the inputs that could be read, in input order.

    Row ``i`` of ``features`` belongs to ``paths[kept_indices[i]]``; inputs listed in ``failed`` have no
    row. ``computed`` counts images the backbone encoded in this call (each distinct content once);
    ``reused`` counts rows served without encoding (from the cache, or a byte-identical file encoded in this
    call), so ``computed + reused == len(kept_indices)``.
    """

    features: torch.Tensor  # N_kept × D float32, on the CPU
    kept_indices: list[int]
    computed: int
    reused: int
    failed: list[tuple[Path, str]] = field(default_factory=list)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def embed_images(
    backbone: ImageEncoder,
    paths: Sequence[str | os.PathLike[str]],
    cache: EmbeddingCache | None,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
    decoder: BatchDecoder | None = None,
) -> EmbedResult:
    """Embed ``paths`` with ``backbone``, encoding only what ``cache`` lacks (``cache=None``: encode all).

    Unreadable images are reported in ``failed`` and skipped; they never fail the batch they are in.
    ``decoder`` replaces the default DataLoader that turns (path, digest) pairs into batches of pixels
    (``data.embed_pipeline.EmbedPipeline`` decodes JPEG on the GPU and keeps its workers between calls).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    files = [Path(path) for path in paths]
    total = len(files)
    digests, failures = _hash_files(files)
    namespace = backbone.cache_namespace
    unique = list(dict.fromkeys(d for d in digests if d is not None))
    vectors: dict[str, np.ndarray] = cache.get_many(namespace, unique) if cache is not None else {}
    failed_content: dict[str, str] = {}

    # One representative file per missing content: duplicates are decoded and encoded once.
    missing = [digest for digest in unique if digest not in vectors]
    uses = Counter(d for d in digests if d is not None)
    first_path: dict[str, Path] = {}
    for path, digest in zip(files, digests, strict=True):
        if digest is not None:
            first_path.setdefault(digest, path)
    done = total - sum(uses[d] for d in missing)
    if progress is not None:
        progress(done, total)
    if missing:
        items = [(first_path[d], d) for d in missing]
        loader: Iterable[DecodedBatch] = (
            decoder(items, batch_size)
            if decoder is not None
            else DataLoader(
                _DecodeDataset(items, backbone.preprocess),
                batch_size=batch_size,
                num_workers=num_workers,
                collate_fn=_collate,
                pin_memory=backbone.device.type == "cuda",
            )
        )
        for batch in loader:
            failed_content.update(batch.failures)
            if batch.pixels is not None:
                encoded = backbone.encode_images(batch.pixels).detach().to("cpu", torch.float32).numpy()
                fresh = {}
                finite = np.isfinite(encoded).all(axis=1)  # one vectorised check, not one per row
                for digest, vector, ok in zip(batch.digests, encoded, finite, strict=True):
                    if ok:
                        fresh[digest] = vector
                    else:  # e.g. fp16 overflow: report it like a bad image instead of caching poison
                        failed_content[digest] = "the encoder produced non-finite values for this image"
                if cache is not None:
                    cache.put_many(namespace, fresh)  # one transaction per batch
                vectors.update(fresh)
            done += sum(uses[d] for d in [*batch.digests, *batch.failures])
            if progress is not None:
                progress(done, total)

    kept: list[int] = []
    rows: list[np.ndarray] = []
    failed: list[tuple[Path, str]] = []
    for index, digest in enumerate(digests):
        if digest is None:
            failed.append((files[index], failures[index]))
        elif digest in vectors:
            kept.append(index)
            rows.append(vectors[digest])
        else:
            failed.append((files[index], failed_content[digest]))
    features = torch.from_numpy(np.stack(rows)) if rows else torch.empty((0, backbone.embed_dim))
    computed = len(missing) - len(failed_content)
    return EmbedResult(
        features=features.float(), kept_indices=kept, computed=computed, reused=len(kept) - computed, failed=failed
    )


def _hash_files(files: Sequence[Path]) -> tuple[list[str | None], dict[int, str]]:
    """sha256 per file (None where unreadable) and the read errors by index. Hashing releases the GIL."""

    def one(path: Path) -> str | BaseException:
        try:
            return file_sha256(path)
        except OSError as error:
            return error

    digests: list[str | None] = []
    failures: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1))) as pool:
        for index, outcome in enumerate(pool.map(one, files)):
            if isinstance(outcome, BaseException):
                digests.append(None)
                failures[index] = f"unreadable: {getattr(outcome, 'strerror', None) or outcome}"
            else:
                digests.append(outcome)
    return digests, failures


class _DecodeDataset(Dataset[tuple[str, torch.Tensor | None, str]]):
    """Reads, re-hashes, decodes and preprocesses one file; a failure becomes a reason, not an exception."""

    def __init__(self, items: list[tuple[Path, str]], preprocess: Callable[[Image.Image], torch.Tensor]) -> None:
        self.items = items
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor | None, str]:
        path, digest = self.items[index]
        try:
            data = path.read_bytes()
        except OSError as error:
            return digest, None, f"unreadable: {error.strerror or error}"
        # The vector is stored under the digest hashed earlier, so the bytes decoded must be those bytes.
        if hashlib.sha256(data).hexdigest() != digest:
            return digest, None, "file changed while embedding; run again to pick up the new content"
        try:
            return digest, self.preprocess(decode_image(data, path)), ""
        except ImageDecodeError as error:
            return digest, None, error.reason


@dataclass
class DecodedBatch:
    """Pixels ready for ``encode_images`` (row i is ``digests[i]``) and the contents that failed to decode."""

    digests: list[str]
    pixels: torch.Tensor | None
    failures: dict[str, str]  # digest → reason

    def pin_memory(self) -> DecodedBatch:  # called by the DataLoader when pin_memory=True
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


def _collate(samples: list[tuple[str, torch.Tensor | None, str]]) -> DecodedBatch:
    good = [(digest, pixels) for digest, pixels, _ in samples if pixels is not None]
    failures = {digest: reason for digest, pixels, reason in samples if pixels is None}
    pixels = torch.stack([p for _, p in good]) if good else None
    return DecodedBatch(digests=[d for d, _ in good], pixels=pixels, failures=failures)
