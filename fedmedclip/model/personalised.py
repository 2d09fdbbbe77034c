"""A site's personalised classifier: global FAM + private head + its class prototypes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedmedclip.model.ensemble import EnsembleOutput, ensemble
from fedmedclip.model.fam import build_fam
from fedmedclip.model.head import DEFAULT_HIDDEN, build_head
from fedmedclip.model.masked import fold_masks


class PersonalisedClassifier:
    """Predicts with ``p = (1-α) p_F + α p_M`` from raw CLIP image embeddings (eval mode, no gradient)."""

    def __init__(
        self,
        classes: Sequence[str],
        fam_state: dict[str, torch.Tensor],
        text_prototypes: torch.Tensor,
        logit_scale: float,
        head_state: dict[str, torch.Tensor] | None = None,
        head_hidden: int = DEFAULT_HIDDEN,
    ) -> None:
        if text_prototypes.shape[0] != len(classes):
            raise ValueError(f"{len(classes)} classes but {text_prototypes.shape[0]} text prototypes")
        dim = text_prototypes.shape[1]
        self.classes = list(classes)
        # Masks are fixed at inference: fold them into plain linear layers once instead of on every call.
        self.fam = fold_masks(build_fam(dim, fam_state).eval())
        head = build_head(dim, len(classes), head_state, hidden=head_hidden).eval() if head_state else None
        self.head = fold_masks(head) if head is not None else None
        self.text_prototypes = text_prototypes.float()
        self.logit_scale = logit_scale

    @property
    def has_head(self) -> bool:
        return self.head is not None

    def to(self, device: torch.device | str) -> PersonalisedClassifier:
        self.fam.to(device)
        if self.head is not None:
            self.head.to(device)
        self.text_prototypes = self.text_prototypes.to(device)
        return self

    @torch.inference_mode()
    def predict(self, features: torch.Tensor) -> EnsembleOutput:
        features = features.to(self.text_prototypes.device, torch.float32)
        adapted = self.fam(features)
        logits = self.head(adapted) if self.head is not None else None
        return ensemble(adapted, self.text_prototypes, self.logit_scale, logits)
