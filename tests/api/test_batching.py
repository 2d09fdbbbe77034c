"""Micro-batching: concurrent requests share backbone passes, each gets its own rows back."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.model.personalised import PersonalisedClassifier
from inference_api.batcher import MicroBatcher
from inference_api.errors import BusyError

DIM = 8


def _classifier() -> PersonalisedClassifier:
    prototypes = torch.nn.functional.normalize(torch.randn(3, DIM, generator=torch.Generator().manual_seed(0)), dim=-1)
    return PersonalisedClassifier(["a", "b", "c"], fam_state(build_fam(DIM)), prototypes, 10.0)


class GatedEncoder:
    """Records batch sizes; the first call waits until released, so later requests pile up meanwhile."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.sizes:
            self.release.wait(5)
        self.sizes.append(int(pixels.shape[0]))
        return pixels.flatten(1)[:, :DIM] * 3  # row i depends only on input row i


def test_requests_arriving_during_a_pass_are_batched_together_and_routed_back():
    async def scenario() -> None:
        encoder = GatedEncoder()
        batcher = MicroBatcher(encoder, max_batch=8)
        await batcher.start()
        classifier = _classifier()
        inputs = [torch.randn(size, 3, 2, 2) for size in (1, 1, 2, 1, 3, 1)]
        tasks = [asyncio.create_task(batcher.run(inputs[0], classifier))]
        await asyncio.sleep(0.05)  # the first request is now in the (held) backbone pass
        tasks += [asyncio.create_task(batcher.run(pixels, classifier)) for pixels in inputs[1:]]
        await asyncio.sleep(0.05)  # the others queue meanwhile
        encoder.release.set()
        outputs = await asyncio.gather(*tasks)
        await batcher.stop()
        assert encoder.sizes == [1, 8]  # five requests, one pass
        for pixels, output in zip(inputs, outputs, strict=True):
            expected = classifier.predict(pixels.flatten(1)[:, :DIM] * 3)
            assert torch.allclose(output.probs, expected.probs, atol=1e-6)

    asyncio.run(scenario())


def test_a_batch_never_exceeds_the_limit_and_a_failure_reaches_every_caller():
    async def scenario() -> None:
        sizes: list[int] = []

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            sizes.append(int(pixels.shape[0]))
            if int(pixels.shape[0]) == 1:
                raise RuntimeError("device lost")
            return pixels.flatten(1)[:, :DIM]

        batcher = MicroBatcher(encode, max_batch=4)
        await batcher.start()
        classifier = _classifier()
        results = await asyncio.gather(
            *[batcher.run(torch.randn(3, 3, 2, 2), classifier) for _ in range(3)],
            return_exceptions=True,
        )
        assert all(not isinstance(r, BaseException) for r in results) and max(sizes) <= 4
        with pytest.raises(RuntimeError, match="device lost"):
            await batcher.run(torch.randn(1, 3, 2, 2), classifier)
        await batcher.stop()

    asyncio.run(scenario())


def test_a_full_queue_answers_busy():
    async def scenario() -> None:
        encoder = GatedEncoder()
        batcher = MicroBatcher(encoder, max_batch=2, max_queued=3)
        await batcher.start()
        classifier = _classifier()
        in_flight = asyncio.create_task(batcher.run(torch.randn(2, 3, 2, 2), classifier))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(batcher.run(torch.randn(2, 3, 2, 2), classifier))
        await asyncio.sleep(0)
        with pytest.raises(BusyError, match="retry"):  # 2 waiting + 2 more > 3
            await batcher.run(torch.randn(2, 3, 2, 2), classifier)
        encoder.release.set()
        await asyncio.gather(in_flight, waiting)
        await batcher.stop()

    asyncio.run(scenario())


def test_under_load_a_batch_waits_briefly_for_latecomers_but_a_lone_stream_never_waits():
    async def scenario() -> None:
        encoder = GatedEncoder()
        batcher = MicroBatcher(encoder, max_batch=8, max_wait_s=0.5)
        await batcher.start()
        classifier = _classifier()
        encoder.release.set()
        await batcher.run(torch.randn(1, 3, 2, 2), classifier)
        assert batcher.fill_wait() == 0  # after a batch of one: no waiting at all

        encoder.release.clear()
        encoder.sizes.clear()
        threading.Timer(1.0, encoder.release.set).start()  # a "slow" batch of two: 1 s of compute
        await batcher.run(torch.randn(2, 3, 2, 2), classifier)
        assert 0.09 <= batcher.fill_wait() <= 0.5  # a tenth of the last batch's time, capped
        first = asyncio.create_task(batcher.run(torch.randn(1, 3, 2, 2), classifier))
        await asyncio.sleep(0.01)
        late = asyncio.create_task(batcher.run(torch.randn(1, 3, 2, 2), classifier))
        await asyncio.gather(first, late)
        await batcher.stop()
        assert encoder.sizes == [2, 2]  # the latecomer joined the batch instead of running alone

    asyncio.run(scenario())


class CountingClassifier(PersonalisedClassifier):
    """Counts the classifier passes; otherwise the real thing."""

    calls = 0

    def predict(self, features: torch.Tensor):  # type: ignore[no-untyped-def]
        type(self).calls += 1
        return super().predict(features)


def test_requests_of_two_sites_in_one_batch_get_their_own_classifier_in_one_pass_each():
    def make(seed: int) -> PersonalisedClassifier:
        generator = torch.Generator().manual_seed(seed)
        prototypes = torch.nn.functional.normalize(torch.randn(3, DIM, generator=generator), dim=-1)
        return CountingClassifier(["a", "b", "c"], fam_state(build_fam(DIM)), prototypes, 10.0)

    async def scenario() -> None:
        encoder = GatedEncoder()
        batcher = MicroBatcher(encoder, max_batch=16)
        await batcher.start()
        site_a, site_b = make(1), make(2)
        first = asyncio.create_task(batcher.run(torch.randn(1, 3, 2, 2), site_a))
        await asyncio.sleep(0.05)
        inputs = [(torch.randn(size, 3, 2, 2), (site_a, site_b)[i % 2]) for i, size in enumerate((2, 1, 1, 3, 1))]
        tasks = [asyncio.create_task(batcher.run(pixels, classifier)) for pixels, classifier in inputs]
        await asyncio.sleep(0.05)
        CountingClassifier.calls = 0
        encoder.release.set()
        await first
        outputs = await asyncio.gather(*tasks)
        await batcher.stop()
        assert encoder.sizes == [1, 8]
        passes = CountingClassifier.calls
        for (pixels, classifier), output in zip(inputs, outputs, strict=True):
            expected = classifier.predict(pixels.flatten(1)[:, :DIM] * 3)
            assert output.probs.shape == expected.probs.shape
            assert torch.allclose(output.probs, expected.probs, atol=1e-6)
            assert torch.allclose(output.alpha, expected.alpha, atol=1e-6)
        assert passes == 1 + 2  # the first batch, then one pass per site for the five queued requests

    asyncio.run(scenario())
