"""FedAvg full fine-tuning of CLIP on pixels: the compute and traffic anchor (docs/design.md §3, "Baselines").

No embedding cache is possible (the encoder changes every step), so every round decodes, runs both towers
forward and backward, and every site uploads the whole model. That is why it runs only ``fedavg.rounds``
rounds on at most ``fedavg.max_train_images_per_site`` images per site: enough to measure its cost and
see where it heads, not to train it to convergence on a CPU. The last round is reported.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fedmedclip.data.cache import embed_images
from fedmedclip.data.images import load_image
from fedmedclip.experiment.config import ExperimentConfig
from fedmedclip.experiment.data import PreparedData, PreparedSite
from fedmedclip.experiment.reporter import Reporter
from fedmedclip.experiment.results import MethodResult, probs_metrics
from fedmedclip.model.backbone import Backbone
from fedmedclip.model.prompts import render_prompts
from fedmedclip.training.baselines import fedavg_average, fedavg_finetune_round


def model_upload_bytes(model: Any) -> int:
    """What one FedAvg upload carries: every floating tensor of the model, as stored (fp32 on our side)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if t.is_floating_point())


def run_fedavg(data: PreparedData, config: ExperimentConfig, reporter: Reporter) -> MethodResult:
    settings = config.fedavg
    backbone = data.backbone
    templates = config.backbone.prompt_templates
    result = MethodResult("fedavg", "FedAvg (full fine-tune)", rounds_run=settings.rounds)
    result.notes.append(
        f"{settings.rounds} round(s) on at most {settings.max_train_images_per_site} training images per site; "
        "last round reported; compute counts decoding the training images once plus every training step"
    )
    global_model = copy.deepcopy(backbone.model)
    per_upload = model_upload_bytes(global_model)
    started = time.perf_counter()
    batches = [_training_pixels(site, backbone, settings.max_train_images_per_site, config.seed) for site in data.sites]
    tokens = [backbone.tokenizer([render_prompts(name, templates)[0] for name in site.classes]) for site in data.sites]
    result.train_seconds += time.perf_counter() - started
    with reporter.progress("FedAvg full fine-tune: site rounds") as update:
        total = settings.rounds * len(data.sites)
        for round_index in range(settings.rounds):
            states, weights = [], []
            for index, (pixels, labels) in enumerate(batches):
                started = time.perf_counter()
                local = copy.deepcopy(global_model)
                fedavg_finetune_round(
                    local,
                    pixels,
                    labels,
                    tokens[index],
                    lr=settings.lr,
                    batch_size=settings.batch_size,
                    seed=config.seed * 1000 + round_index * 100 + index,
                )
                states.append({k: v.detach() for k, v in local.state_dict().items()})
                weights.append(float(labels.numel()) if config.federation.weighting == "samples" else 1.0)
                result.train_seconds += time.perf_counter() - started
                result.upload_bytes += per_upload
                result.uploads += 1
                update(round_index * len(data.sites) + index + 1, total)
            started = time.perf_counter()
            global_model.load_state_dict(fedavg_average(states, weights))
            result.train_seconds += time.perf_counter() - started
    result.selected_round = settings.rounds
    tuned = dataclasses.replace(backbone, model=global_model.eval())  # recomputes the (trained) logit scale
    with reporter.progress("FedAvg: evaluating the fine-tuned model") as update:
        sites = [*data.sites, *([data.holdout] if data.holdout is not None else [])]
        for done, site in enumerate(sites):
            metrics = _evaluate(tuned, site, templates)
            if data.holdout is not None and site is data.holdout:
                result.holdout = metrics
            else:
                result.per_site[site.name] = metrics
            update(done + 1, len(sites))
    return result


def _training_pixels(
    site: PreparedSite, backbone: Backbone, limit: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    paths = site.embeddings.part_paths("train")
    _, labels = site.part("train")
    order = np.random.default_rng([seed, len(paths)]).permutation(len(paths))[:limit]
    chosen = sorted(int(i) for i in order)
    pixels = torch.stack([backbone.preprocess(load_image(paths[i])) for i in chosen])
    return pixels, labels[chosen]


def _evaluate(model: Backbone, site: PreparedSite, templates: list[str]) -> dict[str, float]:
    paths: list[Path] = site.embeddings.part_paths("test")
    _, labels = site.part("test")
    encoded = embed_images(model, paths, None)
    features = F.normalize(encoded.features, dim=-1)
    prototypes = model.class_prototypes(site.classes, templates)
    probs = torch.softmax(model.logit_scale * features @ prototypes.T, dim=-1)
    return probs_metrics(probs, labels[encoded.kept_indices])
