"""The device-resident round (training.device_round) against train_local_round: same numbers.

On the CPU the same code path runs with capture disabled; on CUDA (when present) the captured graph runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.device_round import DeviceRoundTrainer
from fedmedclip.training.local_round import train_local_round


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensor ops: on a shared machine a second intra-op thread mostly waits."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _site(n: int, dim: int = 16, classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator) * 3
    labels = torch.arange(n) % classes
    features = centres[labels] + torch.randn(n, dim, generator=generator)
    protos = torch.nn.functional.normalize(torch.randn(classes, dim, generator=generator), dim=-1)
    return features, labels, protos


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name].cpu().float(), b[name].cpu().float(), atol=atol, rtol=1e-4, msg=name)


def _compare(device: str, n: int, config: TrainConfig, rounds: int = 2, atol: float = 1e-5) -> DeviceRoundTrainer:
    """Several rounds, carrying FAM and head over, on both paths: one trainer serves all rounds."""
    features, labels, protos = _site(n)
    trainer = DeviceRoundTrainer(features, labels, protos, logit_scale=14.0, config=config, device=device)
    fam_cpu = fam_dev = fam_state(build_fam(16, seed=1))
    head_cpu: dict[str, torch.Tensor] | None = None
    head_dev: dict[str, torch.Tensor] | None = None
    for round_index in range(rounds):
        expected = train_local_round(
            features, labels, protos, fam_cpu, head_cpu, logit_scale=14.0, config=config,
            round_index=round_index, seed=7,
        )  # fmt: skip
        got = trainer.train_round(fam_dev, head_dev, round_index=round_index, seed=7)
        _close(got.fam_state, expected.fam_state, atol)
        _close(got.head_state, expected.head_state, atol)
        assert got.num_samples == expected.num_samples
        assert got.metrics.keys() == expected.metrics.keys()
        for key, value in expected.metrics.items():
            assert got.metrics[key] == pytest.approx(value, rel=1e-4, abs=atol), key
        fam_cpu, head_cpu = expected.fam_state, expected.head_state
        fam_dev, head_dev = got.fam_state, got.head_state
    return trainer


@pytest.mark.parametrize(
    ("n", "config"),
    [
        (64, TrainConfig(fam_lr=1e-3, head_hidden=32, batch_size=16)),  # full batches only
        (70, TrainConfig(fam_lr=1e-3, head_hidden=32, batch_size=16, local_epochs=2)),  # a tail of 6, twice
        (33, TrainConfig(head_hidden=32, batch_size=16, contrastive="prototype")),  # singleton folded: 16 + 17
        (40, TrainConfig(head_hidden=32, batch_size=8, use_kd=False, use_head_ce=False)),  # no head terms
    ],
)
def test_cpu_path_matches_train_local_round(n: int, config: TrainConfig) -> None:
    trainer = _compare("cpu", n, config)
    assert not trainer.captured  # capture is a CUDA feature; the CPU runs the same steps eagerly


def test_bad_site_data_is_refused_before_any_round() -> None:
    features, labels, protos = _site(8)
    with pytest.raises(ValueError, match="labels must lie in"):
        DeviceRoundTrainer(features, labels + 5, protos, logit_scale=14.0)
    with pytest.raises(ValueError, match="at least 2"):
        DeviceRoundTrainer(features[:1], labels[:1], protos, logit_scale=14.0)
    trainer = DeviceRoundTrainer(features, labels, protos, logit_scale=14.0, config=TrainConfig(head_hidden=8))
    with pytest.raises(ValueError, match="has shape"):
        trainer.train_round(fam_state(build_fam(32)), None)
    wrong = fam_state(build_fam(16))
    del wrong["m1.kappa"]
    with pytest.raises(ValueError, match=r"missing \['m1\.kappa'\]"):
        trainer.train_round(wrong, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("n", [64, 70])
def test_cuda_graph_path_matches_train_local_round(n: int) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False  # compare float32 with float32
    trainer = _compare("cuda", n, TrainConfig(fam_lr=1e-3, head_hidden=32, batch_size=16), atol=1e-4)
    assert trainer.captured, trainer.capture_error
