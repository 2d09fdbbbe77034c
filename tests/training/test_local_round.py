import pytest
import torch

from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.local_round import train_local_round


def _site(n: int = 64, dim: int = 16, classes: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator) * 3
    labels = torch.arange(n) % classes
    features = centres[labels] + torch.randn(n, dim, generator=generator)
    protos = torch.nn.functional.normalize(torch.randn(classes, dim, generator=generator), dim=-1)
    return features, labels, protos


def test_a_round_updates_fam_and_head_and_reports_metrics():
    features, labels, protos = _site()
    global_fam = fam_state(build_fam(16, seed=0))
    result = train_local_round(
        features, labels, protos, global_fam, None, logit_scale=14.0, config=TrainConfig(fam_lr=1e-3, head_hidden=32)
    )
    assert result.num_samples == 64
    assert any(not torch.equal(result.fam_state[k], global_fam[k]) for k in global_fam)
    assert not torch.equal(result.fam_state["m1.kappa"], global_fam["m1.kappa"])  # kappa trains
    assert {"loss", "contrastive", "head_ce", "kd", "train_head_acc"} <= set(result.metrics)
    assert result.metrics["fam_alive_rows"] == 32.0


def test_rounds_are_deterministic_for_a_seed():
    features, labels, protos = _site()
    global_fam = fam_state(build_fam(16, seed=0))
    config = TrainConfig(head_hidden=32)
    a = train_local_round(features, labels, protos, global_fam, None, logit_scale=14.0, config=config, seed=4)
    b = train_local_round(features, labels, protos, global_fam, None, logit_scale=14.0, config=config, seed=4)
    assert all(torch.equal(a.fam_state[k], b.fam_state[k]) for k in a.fam_state)
    assert all(torch.equal(a.head_state[k], b.head_state[k]) for k in a.head_state)


def test_head_learns_across_rounds():
    features, labels, protos = _site(n=96)
    fam = fam_state(build_fam(16, seed=0))
    head = None
    accs = []
    for round_index in range(6):
        result = train_local_round(
            features,
            labels,
            protos,
            fam,
            head,
            logit_scale=14.0,
            config=TrainConfig(head_hidden=32),
            round_index=round_index,
        )
        fam, head = result.fam_state, result.head_state
        accs.append(result.metrics["train_head_acc"])
    assert accs[-1] > 0.9 > accs[0] - 0.2
    assert accs[-1] > accs[0]


def test_learning_rates_decay_per_round():
    config = TrainConfig()
    assert config.learning_rates(0) == (5e-5, 1e-3)
    fam_lr, head_lr = config.learning_rates(2)
    assert fam_lr == pytest.approx(5e-5 * 0.97**2) and head_lr == pytest.approx(1e-3 * 0.97**2)


@pytest.mark.parametrize(
    ("labels", "message"),
    [(torch.tensor([0, 1, 5, 0]), "labels must lie in"), (torch.tensor([0, 1]), "labels must have shape")],
)
def test_bad_inputs_are_refused(labels, message):
    features = torch.randn(4, 16)
    protos = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    with pytest.raises(ValueError, match=message):
        train_local_round(features, labels, protos, fam_state(build_fam(16)), None, logit_scale=10.0)


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1)
    with pytest.raises(ValueError, match="unknown training settings: nope"):
        TrainConfig.from_dict({"nope": 1})
    config = TrainConfig(contrastive="prototype", kd_weight=0.1)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_head_running_statistics_match_the_trained_weights():
    """Evaluation mode must predict like training mode: BatchNorm statistics are recalibrated each round."""
    from fedmedclip.model.head import build_head

    features, labels, protos = _site(n=96)
    # Normalised CLIP-like features: tiny per-dimension variance, where stale running statistics break.
    features = torch.nn.functional.normalize(features, dim=-1)
    result = train_local_round(
        features, labels, protos, fam_state(build_fam(16)), None, logit_scale=14.0, config=TrainConfig(head_hidden=32)
    )
    fam = build_fam(16, result.fam_state).eval()
    head = build_head(16, 3, result.head_state, hidden=32)
    with torch.no_grad():
        adapted = fam(features)
        eval_predictions = head.eval()(adapted).argmax(dim=-1)
        batch_predictions = head.train()(adapted).argmax(dim=-1)
    assert (eval_predictions == batch_predictions).float().mean() >= 0.95


def test_batchnorm_recalibration_on_a_class_sorted_site_matches_the_true_statistics():
    # An ImageFolder site arrives sorted by class: with per-batch averaging each batch held one class and
    # the between-class variance was lost (0.72 of the true variance). The statistics must be exact.
    from fedmedclip.model.head import build_head
    from fedmedclip.training.local_round import recalibrate_batchnorm

    generator = torch.Generator().manual_seed(0)
    classes, per_class, dim = 4, 48, 16
    centres = torch.randn(classes, dim, generator=generator) * 4
    labels = torch.arange(classes).repeat_interleave(per_class)  # sorted by class
    features = centres[labels] + torch.randn(classes * per_class, dim, generator=generator)
    fam = build_fam(dim, seed=0)
    head = build_head(dim, classes, hidden=32, seed=0)
    recalibrate_batchnorm(fam, head, features, batch_size=32)

    norms = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    with torch.no_grad():
        inputs = head.body[0](fam.eval()(features))  # what the first BatchNorm sees, over the whole set
    true_var = inputs.var(dim=0, unbiased=False)
    ratio = norms[0].running_var / true_var
    assert bool(((ratio - 1).abs() < 0.02).all()), (
        f"variance ratio in [{float(ratio.min()):.3f}, {float(ratio.max()):.3f}]"
    )
    assert torch.allclose(norms[0].running_mean, inputs.mean(dim=0), atol=1e-5)

    # The order of the rows changes nothing: shuffled and sorted give the same head predictions.
    shuffled = build_head(dim, classes, hidden=32, seed=0)
    order = torch.randperm(features.shape[0], generator=generator)
    recalibrate_batchnorm(fam, shuffled, features[order], batch_size=32)
    head.eval(), shuffled.eval()
    with torch.no_grad():
        assert torch.equal(head(fam(features)).argmax(-1), shuffled(fam(features)).argmax(-1))
        for a, b in zip(norms, [m for m in shuffled.modules() if isinstance(m, torch.nn.BatchNorm1d)], strict=True):
            assert torch.allclose(a.running_var, b.running_var, rtol=1e-4)
