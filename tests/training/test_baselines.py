import torch

from fedmedclip.model.backbone import load_backbone
from fedmedclip.training.baselines import (
    build_fedclip_adapter,
    fedavg_average,
    fedavg_finetune_round,
    fedclip_predict,
    train_fedclip_round,
)
from fedmedclip.training.config import TrainConfig


def test_fedclip_adapter_trains_with_the_contrastive_loss_and_predicts_zero_shot():
    torch.manual_seed(0)
    protos = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    labels = torch.arange(40) % 2
    features = protos[labels] * 3 + 0.5 * torch.randn(40, 8)
    state = {k: v.clone() for k, v in build_fedclip_adapter(8).state_dict().items()}
    new_state, metrics = train_fedclip_round(
        features, labels, protos, state, logit_scale=10.0, config=TrainConfig(fam_lr=1e-2)
    )
    assert any(not torch.equal(new_state[k], state[k]) for k in state)
    assert metrics["loss"] > 0
    probs = fedclip_predict(new_state, features, protos, 10.0)
    assert probs.shape == (40, 2)
    assert torch.allclose(probs.sum(dim=1), torch.ones(40))


def test_fedavg_round_changes_every_tower_and_averages(tiny_spec):
    model = load_backbone(tiny_spec, device="cpu").model
    original = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = torch.randn(6, 3, 64, 64)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    tokens = torch.randint(1, 400, (2, 32))
    metrics = fedavg_finetune_round(model, pixels, labels, tokens, lr=1e-3, batch_size=3)
    assert metrics["loss"] > 0
    tuned = model.state_dict()
    assert not torch.equal(tuned["visual.conv1.weight"], original["visual.conv1.weight"])
    assert not torch.equal(tuned["token_embedding.weight"], original["token_embedding.weight"])
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    averaged = fedavg_average([original, tuned], [1.0, 3.0])
    expected = 0.25 * original["visual.conv1.weight"] + 0.75 * tuned["visual.conv1.weight"]
    assert torch.allclose(averaged["visual.conv1.weight"], expected, atol=1e-6)
