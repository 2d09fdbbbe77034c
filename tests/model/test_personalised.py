import pytest
import torch

from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.model.head import build_head, head_state
from fedmedclip.model.personalised import PersonalisedClassifier


def test_prediction_uses_fam_head_and_prototypes():
    fam = fam_state(build_fam(8, seed=1))
    head = head_state(build_head(8, 3, hidden=16, seed=1))
    protos = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    classifier = PersonalisedClassifier(["a", "b", "c"], fam, protos, 10.0, head, head_hidden=16)
    out = classifier.predict(torch.randn(5, 8))
    assert out.probs.shape == (5, 3)
    assert torch.allclose(out.probs.sum(dim=1), torch.ones(5))
    assert out.head is not None
    assert bool(((out.alpha >= 0) & (out.alpha <= 1)).all())


def test_an_unseen_site_without_head_predicts_zero_shot():
    protos = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    classifier = PersonalisedClassifier(["x", "y"], fam_state(build_fam(8)), protos, 10.0)
    out = classifier.predict(torch.randn(4, 8))
    assert not classifier.has_head
    assert torch.equal(out.probs, out.zero_shot)


def test_class_list_must_match_prototypes():
    with pytest.raises(ValueError, match="3 classes but 2 text prototypes"):
        PersonalisedClassifier(["a", "b", "c"], fam_state(build_fam(8)), torch.randn(2, 8), 10.0)
