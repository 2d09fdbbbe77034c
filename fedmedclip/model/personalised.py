"""A site's personalised classifier: global FAM + private head + its class prototypes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from fedmedclip.model.ensemble import EnsembleOutput, calibrate_probs, ensemble
from fedmedclip.model.fam import build_fam
from fedmedclip.model.head import DEFAULT_HIDDEN, build_head
from fedmedclip.model.masked import fold_masks


class PersonalisedClassifier:
    """Predicts with ``p = (1-α) p_F + α p_M`` from raw CLIP image embeddings (eval mode, no gradient).

    With a fitted ``temperature`` the returned ``probs`` are calibrated (``softmax(log p / T)``); the
    components ``zero_shot`` and ``head`` are always as the model computes them.
    """

    def __init__(
        self,
        classes: Sequence[str],
        fam_state: dict[str, torch.Tensor],
        text_prototypes: torch.Tensor,
        logit_scale: float,
        head_state: dict[str, torch.Tensor] | None = None,
        head_hidden: int = DEFAULT_HIDDEN,
        temperature: float = 1.0,
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
        if not (temperature > 0 and temperature != float("inf")):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        self.temperature = temperature  # fitted on the site's validation split; 1.0 = uncalibrated

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
        output = ensemble(adapted, self.text_prototypes, self.logit_scale, logits)
        if self.temperature == 1.0:
            return output
        return replace(output, probs=calibrate_probs(output.probs, self.temperature))
