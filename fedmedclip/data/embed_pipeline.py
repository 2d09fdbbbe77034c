"""The embedding pass's decoder, fed at accelerator speed (docs/design.md §3 "Embedding pipeline").

``cache.embed_images`` hashes files, looks them up in the cache and encodes what is missing; this module
only turns (path, digest) pairs into batches of pixels, with decoding kept apart from encoding:

- **JPEG on the GPU.** When the backbone runs on CUDA and its preprocessing is the usual resize → centre
  crop → to-tensor → normalise, a reader thread reads and re-hashes the bytes, and the main thread decodes a
  whole batch with ``torchvision.io.decode_jpeg(list, device="cuda")`` (nvJPEG), then resizes (bicubic,
  antialiased), crops and normalises on the device. The device resize is torchvision's, not Pillow's: the
  pixels differ by about one grey level, the embeddings by far less than the spread between images
  (tests/data/test_embed_pipeline.py measures it).
- **Everything else on persistent CPU worker processes** (PNG, DICOM, TIFF..., and JPEG when there is no
  GPU): a pool that lives as long as the pipeline, so repeated passes pay no start-up. Each task is a whole
  batch: read, re-hash, ``decode_image`` and the preprocessing's Pillow steps (resize, crop). Workers return
  uint8 pixels, a quarter of float32's bytes; to-tensor and normalise run on the encoder's device with the
  very operations torchvision uses, so this route gives exactly the embeddings of the default DataLoader.
- **Pinned double buffering.** A producer thread keeps at most two decoded batches ready in page-locked
  memory (``torch.empty(..., pin_memory=True)``: PyTorch's caching host allocator hands a block back only
  after the copy that read it has finished), and the host-to-device copy runs on its own CUDA stream, so the
  next batch travels while the current one is encoded.

A file whose bytes no longer match its digest, or that cannot be decoded, becomes a failure with a reason,
exactly as in ``cache.embed_images``.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import multiprocessing
import queue
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

from fedmedclip.data.cache import DecodedBatch, ImageEncoder
from fedmedclip.data.images import ImageDecodeError, decode_image

_JPEG_MAGIC = b"\xff\xd8\xff"
_EXIF_ORIENTATION = 0x0112
_CHANGED = "file changed while embedding; run again to pick up the new content"
_QUEUE_DEPTH = 2  # decoded batches waiting for the encoder: double buffering


@dataclass(frozen=True)
class PreprocessPlan:
    """The backbone's preprocessing split at the to-tensor step.

    ``pil_steps`` run in the workers on the decoded image; ``mean``/``std`` (when recognised) normalise on
    the device. ``resize``/``crop`` describe the Pillow steps when they are exactly the CLIP recipe, which
    the GPU JPEG route reproduces with tensor operations; otherwise JPEG goes to the workers too.
    """

    transform: Callable[[Image.Image], torch.Tensor]
    pil_steps: tuple[Callable[[Image.Image], Image.Image], ...] = ()
    mean: tuple[float, ...] | None = None  # None: the workers run the whole transform (unrecognised recipe)
    std: tuple[float, ...] | None = None
    resize: int | None = None  # shorter side, bicubic, antialiased
    crop: tuple[int, int] | None = None

    @property
    def uint8_route(self) -> bool:
        return self.mean is not None and self.crop is not None

    @property
    def device_jpeg_ok(self) -> bool:
        return self.uint8_route and self.resize is not None


def plan_preprocess(transform: Callable[[Image.Image], torch.Tensor]) -> PreprocessPlan:
    """Recognise ``[Resize(n, bicubic)] [CenterCrop] [convert RGB] ToTensor Normalize`` (open_clip's and
    the paper's recipes); anything else runs whole in the workers (correct, just not split)."""
    steps = list(getattr(transform, "transforms", []))
    names = [type(step).__name__ for step in steps]
    if len(steps) < 2 or names[-2] not in ("ToTensor", "MaybeToTensor") or names[-1] != "Normalize":
        return PreprocessPlan(transform)
    normalise = steps[-1]
    pil_steps = tuple(steps[:-2])
    resize: int | None = None
    crop: tuple[int, int] | None = None
    exact = True  # the Pillow steps are ones the device route can reproduce
    for step in pil_steps:
        if isinstance(step, T.Resize) and step.interpolation == T.InterpolationMode.BICUBIC:
            size = step.size
            if isinstance(size, int) or (isinstance(size, list | tuple) and len(size) == 1):
                resize = int(size if isinstance(size, int) else size[0])
            else:  # a fixed (h, w) resize: also a fixed output size
                exact = False
                crop = (int(size[0]), int(size[1]))
        elif isinstance(step, T.CenterCrop):
            crop = (int(step.size[0]), int(step.size[1]))
        elif type(step).__name__ == "MaybeConvertMode" and getattr(step, "mode", None) == "RGB":
            pass  # decode_image already returns RGB
        else:
            exact = False
    return PreprocessPlan(
        transform,
        pil_steps,
        tuple(float(v) for v in normalise.mean),
        tuple(float(v) for v in normalise.std),
        resize if exact else None,
        crop,
    )


# ---- worker side (persistent processes) -------------------------------------------------------------

_WORKER_PLAN: PreprocessPlan | None = None


def _init_worker(plan: PreprocessPlan) -> None:
    global _WORKER_PLAN
    _WORKER_PLAN = plan
    torch.set_num_threads(1)  # one image at a time per process; the processes are the parallelism


@dataclass
class _HostBatch:
    digests: list[str]
    pixels: np.ndarray | torch.Tensor | None  # uint8 B×H×W×3, or float B×3×H×W (whole transform)
    failures: dict[str, str] = field(default_factory=dict)
    jpeg: list[bytes] = field(default_factory=list)  # for the device decoder, one per digest
    ready: torch.Tensor | None = None  # normalised pixels on the encoder's device, once staged
    event: Any = None  # a torch.cuda.Event the encoder's stream waits for before reading ``ready``


def _decode_batch(items: Sequence[tuple[str, str]], plan: PreprocessPlan | None = None) -> _HostBatch:
    """Read, re-hash, decode and run the Pillow steps for a batch; failures become reasons."""
    plan = plan or _WORKER_PLAN
    assert plan is not None, "decode worker used before initialisation"
    digests: list[str] = []
    arrays: list[Any] = []
    failures: dict[str, str] = {}
    for path, digest in items:
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            failures[digest] = f"unreadable: {error.strerror or error}"
            continue
        if hashlib.sha256(data).hexdigest() != digest:
            failures[digest] = _CHANGED
            continue
        try:
            image = decode_image(data, path)
        except ImageDecodeError as error:
            failures[digest] = error.reason
            continue
        if plan.uint8_route:
            for step in plan.pil_steps:
                image = step(image)
            arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        else:
            arrays.append(plan.transform(image))
        digests.append(digest)
    pixels: np.ndarray | torch.Tensor | None = None
    if arrays:
        pixels = np.stack(arrays) if plan.uint8_route else torch.stack(arrays)
    return _HostBatch(digests, pixels, failures)


def _read_checked(item: tuple[Path, str]) -> tuple[bytes | None, str]:
    path, digest = item
    try:
        data = path.read_bytes()
    except OSError as error:
        return None, f"unreadable: {error.strerror or error}"
    if hashlib.sha256(data).hexdigest() != digest:  # hashlib releases the GIL: reader threads overlap
        return None, _CHANGED
    return data, ""


def _gpu_decodable(data: bytes) -> bool:
    """A JPEG that nvJPEG decodes as Pillow would: not rotated by EXIF (the CUDA decoder ignores the tag;
    those few go to the CPU workers, where ``decode_image`` applies it). Reads the header only."""
    if not data.startswith(_JPEG_MAGIC):
        return False
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format == "JPEG" and int(image.getexif().get(_EXIF_ORIENTATION, 1)) == 1
    except Exception:  # let the CPU route produce the proper error for a broken header
        return False


# ---- the pipeline -----------------------------------------------------------------------------------


class EmbedPipeline:
    """A ``cache.BatchDecoder`` for ``backbone``: ``embed_images(..., decoder=pipeline)``.

    ``num_workers`` CPU processes (0: decode in the producer thread); ``device_jpeg=None`` decodes JPEG on
    the GPU when the backbone is on CUDA and the preprocessing is recognised, ``False`` never,
    ``True`` also on the CPU (``decode_jpeg`` on the host, then the device route's tensor resize: for tests).
    Close it (or use ``with``) to stop the workers.
    """

    def __init__(self, backbone: ImageEncoder, *, num_workers: int = 1, device_jpeg: bool | None = None) -> None:
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        transform = getattr(backbone, "transform", None) or backbone.preprocess
        self.plan = plan_preprocess(transform)
        self.device = backbone.device
        self.num_workers = num_workers
        wanted = self.device.type == "cuda" if device_jpeg is None else device_jpeg
        self.device_jpeg = wanted and self.plan.device_jpeg_ok
        self._pool: ProcessPoolExecutor | None = None
        self._readers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="embed-read")  # GPU JPEG route
        self._stage_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        if self.plan.mean is not None and self.plan.std is not None:
            self._mean = torch.tensor(self.plan.mean, device=self.device).view(1, -1, 1, 1)
            self._std = torch.tensor(self.plan.std, device=self.device).view(1, -1, 1, 1)

    def start(self) -> EmbedPipeline:
        """Start the worker processes now (they are otherwise started by the first batch)."""
        if self._pool is None and self.num_workers > 0:
            # fork, like DataLoader's workers: the transform need not be picklable and start-up is cheap.
            # The workers never touch CUDA.
            context = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(
                self.num_workers, mp_context=context, initializer=_init_worker, initargs=(self.plan,)
            )
            list(self._pool.map(_noop, range(self.num_workers)))  # wait until every worker is up
        return self

    def close(self) -> None:
        """Stop the worker processes; a later call starts new ones."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> EmbedPipeline:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def __call__(self, items: list[tuple[Path, str]], batch_size: int) -> Iterator[DecodedBatch]:
        """Batches of pixels on the backbone's device, in any order, each item exactly once."""
        self.start()
        staged: queue.Queue[_HostBatch | BaseException | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(items, batch_size, staged, stop), name="embed-decode", daemon=True
        )
        producer.start()
        try:
            while True:
                got = staged.get()
                if got is None:
                    break
                if isinstance(got, BaseException):
                    raise got
                yield self._to_device(got)
        finally:
            stop.set()
            while producer.is_alive():  # unblock a producer waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    staged.get(timeout=0.05)
            producer.join()

    # -- producer thread: host work only ---------------------------------------------------------------

    def _produce(
        self,
        items: list[tuple[Path, str]],
        batch_size: int,
        staged: queue.Queue[_HostBatch | BaseException | None],
        stop: threading.Event,
    ) -> None:
        def emit(batch: _HostBatch) -> bool:
            self._stage(batch)
            while not stop.is_set():
                try:
                    staged.put(batch, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        pending: collections.deque[Future[_HostBatch]] = collections.deque()
        in_flight = 2 * max(1, self.num_workers)  # keeps every worker busy, bounds the results held

        def submit(batch: list[tuple[str, str]]) -> bool:
            """Decode a batch on the workers (inline without workers), emitting finished ones in order."""
            if self._pool is None:
                return emit(_decode_batch(batch, self.plan))
            pending.append(self._pool.submit(_decode_batch, batch))
            while pending and (len(pending) >= in_flight or pending[0].done()):
                if not emit(pending.popleft().result()):
                    return False
            return True

        try:
            cpu_items: list[tuple[str, str]] = []
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                if not self.device_jpeg:
                    cpu_items += [(str(path), digest) for path, digest in chunk]
                else:
                    jpeg = _HostBatch([], None)
                    for (path, digest), (data, reason) in zip(
                        chunk, self._readers.map(_read_checked, chunk), strict=True
                    ):
                        if data is None:
                            jpeg.failures[digest] = reason
                        elif _gpu_decodable(data):
                            jpeg.digests.append(digest)
                            jpeg.jpeg.append(data)
                        else:  # PNG, DICOM, EXIF-rotated JPEG...: the workers
                            cpu_items.append((str(path), digest))
                    if (jpeg.digests or jpeg.failures) and not emit(jpeg):
                        return
                while len(cpu_items) >= batch_size:
                    if not submit(cpu_items[:batch_size]):
                        return
                    cpu_items = cpu_items[batch_size:]
            if cpu_items and not submit(cpu_items):
                return
            while pending:
                if not emit(pending.popleft().result()):
                    return
            while not stop.is_set():  # None: every item has been emitted
                try:
                    staged.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
        except BaseException as error:  # handed to the consumer, which raises it
            while not stop.is_set():
                try:
                    staged.put(error, timeout=0.1)
                    break
                except queue.Full:
                    continue

    # -- staging, in the producer thread: decode and normalise on the device, on a stream of its own --------

    def _stage(self, batch: _HostBatch) -> None:
        """Turn a host batch into normalised pixels on the device (``ready``), queued on the staging stream
        so that it overlaps the encoder's work on the main stream; ``event`` marks when it is done."""
        stream = self._stage_stream
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            if batch.jpeg:
                batch.ready, batch.digests = self._decode_jpeg_on_device(batch)
                batch.jpeg = []
            elif isinstance(batch.pixels, np.ndarray):  # uint8 from the workers
                host = torch.from_numpy(batch.pixels)
                if stream is not None:  # page-locked, so the copy is asynchronous
                    pinned = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
                    pinned.copy_(host)
                    host = pinned
                moved = host.to(self.device, non_blocking=True)
                batch.ready = self._normalise(moved.permute(0, 3, 1, 2))
            elif isinstance(batch.pixels, torch.Tensor):  # float: the whole transform ran in the worker
                batch.ready = batch.pixels.pin_memory().to(self.device, non_blocking=True) if stream else batch.pixels
            batch.pixels = None
            if stream is not None and batch.ready is not None:
                batch.event = torch.cuda.Event()
                batch.event.record(stream)

    # -- consumer (the encoding thread) ----------------------------------------------------------------

    def _to_device(self, batch: _HostBatch) -> DecodedBatch:
        if batch.event is not None and batch.ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(batch.event)
            batch.ready.record_stream(current)  # allocated on the staging stream, read on this one
        pixels = batch.ready if batch.digests else None
        return DecodedBatch(digests=batch.digests if pixels is not None else [], pixels=pixels, failures=batch.failures)

    def _normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 B×3×H×W → what ToTensor then Normalize produce, with the same operations in the same order."""
        return pixels.contiguous().to(torch.float32).div(255).sub_(self._mean).div_(self._std)

    def _decode_jpeg_on_device(self, batch: _HostBatch) -> tuple[torch.Tensor | None, list[str]]:
        from torchvision.io import ImageReadMode, decode_jpeg
        from torchvision.transforms.v2 import functional as F

        assert self.plan.resize is not None and self.plan.crop is not None
        data = [torch.frombuffer(bytearray(raw), dtype=torch.uint8) for raw in batch.jpeg]
        images: list[torch.Tensor | None]
        try:
            with warnings.catch_warnings():  # torchvision 0.29 announces a move of its decoders to torchcodec
                warnings.simplefilter("ignore", DeprecationWarning)
                images = list(decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:  # one odd file (CMYK, corrupt...) fails the batch: decode one by one instead
            images = [
                self._decode_one(raw, d, batch.failures) for raw, d in zip(batch.jpeg, batch.digests, strict=True)
            ]
        # Resize and crop each source size as one batch: a site's images mostly share a few sizes.
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            if image is not None:
                by_shape.setdefault(tuple(image.shape), []).append(index)
        parts: list[torch.Tensor] = []
        digests: list[str] = []
        for indices in by_shape.values():
            stacked = torch.stack([images[i] for i in indices])  # type: ignore[misc]
            resized = F.resize(stacked, [self.plan.resize], interpolation=T.InterpolationMode.BICUBIC, antialias=True)
            parts.append(F.center_crop(resized, list(self.plan.crop)))
            digests += [batch.digests[i] for i in indices]
        if not parts:
            return None, []
        return self._normalise(torch.cat(parts)), digests

    def _decode_one(self, raw: bytes, digest: str, failures: dict[str, str]) -> torch.Tensor | None:
        """The slow path for a JPEG the batched decoder refused: the CPU decoder, same preprocessing."""
        try:
            image = decode_image(raw)
        except ImageDecodeError as error:
            failures[digest] = error.reason
            return None
        array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        return array.to(self.device)


def _noop(_: int) -> None:
    return None
