"""Micro-batching: concurrent requests share one backbone pass, which runs on a dedicated thread.

One batch is in flight at a time (the backbone is one compute resource). While it runs, new requests queue
up; the next batch takes everything queued, up to ``max_batch`` images.

Taking only what is queued has one bad steady state: with N clients that each wait for their answer before
sending again, batches alternate between a few images and N minus a few, because the clients answered by
one batch come back just after the next has started. So, *under load only* (the previous batch held more
than one image), a batch that is not full waits for latecomers: at most ``max_wait_s`` and at most a tenth
of the previous batch's compute time (but at least 2 ms), so the added latency stays small next to the work.
A single stream of requests (every batch of one) never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from fedmedclip.model.ensemble import EnsembleOutput
from fedmedclip.model.personalised import PersonalisedClassifier
from inference_api.errors import BusyError

Encoder = Callable[[torch.Tensor], torch.Tensor]
_MIN_FILL_S = 0.002


@dataclass
class _Job:
    pixels: torch.Tensor
    classifier: PersonalisedClassifier
    future: asyncio.Future[EnsembleOutput] = field(repr=False)

    @property
    def size(self) -> int:
        return int(self.pixels.shape[0])


class MicroBatcher:
    def __init__(
        self,
        encode: Encoder,
        *,
        max_batch: int = 32,
        max_wait_s: float = 0.0,
        max_queued: int = 512,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._encode = encode
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._max_queued = max_queued
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._held: _Job | None = None  # a job that did not fit the previous batch goes first next time
        self._queued_images = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedmedclip-backbone")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_size = 0  # images in, and seconds spent on, the previous batch
        self._last_seconds = 0.0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fedmedclip-batcher")

    async def stop(self) -> None:
        """Finish what is queued, then stop (uvicorn has already drained requests by then)."""
        self._closing = True
        if self._task is not None:
            while self._queued_images and not self._task.done():
                await asyncio.sleep(0.01)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def run(self, pixels: torch.Tensor, classifier: PersonalisedClassifier) -> EnsembleOutput:
        """Encode ``pixels`` (N × 3 × H × W) with the backbone and classify them with ``classifier``."""
        if self._closing:
            raise BusyError("the service is shutting down", headers={"Retry-After": "5"})
        size = int(pixels.shape[0])
        if self._queued_images + size > self._max_queued:
            raise BusyError("too many images waiting for the model; retry shortly", headers={"Retry-After": "1"})
        job = _Job(pixels, classifier, asyncio.get_running_loop().create_future())
        self._queued_images += size
        self._queue.put_nowait(job)
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(loop)
            self._queued_images -= sum(job.size for job in batch)
            live = [job for job in batch if not job.future.done()]  # skip requests whose client went away
            if not live:
                continue
            if self._on_batch is not None:
                self._on_batch(sum(job.size for job in live))
            started = loop.time()
            try:
                outputs = await loop.run_in_executor(self._executor, self._compute, live)
            except Exception as error:  # surfaces as a 500 on each request in this batch, never kills the loop
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self._last_size, self._last_seconds = sum(job.size for job in live), loop.time() - started
            for job, output in zip(live, outputs, strict=True):
                if not job.future.done():
                    job.future.set_result(output)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Job]:
        first = self._held or await self._queue.get()
        self._held = None
        batch, size = [first], first.size
        deadline = loop.time() + self.fill_wait()
        while size < self._max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if size + job.size > self._max_batch:
                self._held = job
                break
            batch.append(job)
            size += job.size
        return batch

    def fill_wait(self) -> float:
        """Seconds the next batch may wait for more requests (see the module docstring)."""
        if self._last_size <= 1:
            return 0.0
        # The floor matters for small models, whose passes take about a millisecond: a tenth of that gathers
        # nobody, and every pass of one or two images costs several times the CPU per image of a full one.
        return min(self._max_wait_s, max(_MIN_FILL_S, 0.1 * self._last_seconds))

    def _compute(self, jobs: list[_Job]) -> list[EnsembleOutput]:
        pixels = torch.cat([job.pixels for job in jobs])
        # A single request may exceed max_batch; chunking bounds the backbone's peak memory.
        features = torch.cat([self._encode(chunk) for chunk in pixels.split(self._max_batch)])
        parts = features.split([job.size for job in jobs])
        # One classifier pass per bundle rather than per request: with a small model, dozens of one-row
        # passes cost as much CPU as the backbone. Rows are independent, so results do not depend on grouping.
        groups: dict[int, list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(id(job.classifier), []).append(index)
        outputs: list[EnsembleOutput | None] = [None] * len(jobs)
        for indices in groups.values():
            result = jobs[indices[0]].classifier.predict(torch.cat([parts[i] for i in indices]))
            sizes = [jobs[i].size for i in indices]
            heads = result.head.cpu().split(sizes) if result.head is not None else [None] * len(indices)
            for i, probs, zero_shot, head, alpha in zip(
                indices,
                result.probs.cpu().split(sizes),
                result.zero_shot.cpu().split(sizes),
                heads,
                result.alpha.cpu().split(sizes),
                strict=True,
            ):
                outputs[i] = EnsembleOutput(probs=probs, zero_shot=zero_shot, head=head, alpha=alpha)
        return [output for output in outputs if output is not None]
