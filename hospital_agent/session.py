"""What one run needs locally, prepared once per run: the site's embeddings, text prototypes, backbone record.

The backbone is loaded, used for the embedding pass (through the cache: only new or changed images are
encoded) and the class text prototypes, then released: training needs only the cached embeddings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fedmedclip.bundle import BackboneRecord
from fedmedclip.data.cache import EmbeddingCache
from fedmedclip.data.imagefolder import DatasetError, LabeledImages
from fedmedclip.data.sites import NoUsableImagesError, SiteEmbeddings
from fedmedclip.federation.run_config import RunConfig
from fedmedclip.logs import event
from fedmedclip.model.backbone import BackboneSpec, load_backbone
from hospital_agent.adapters import report_skipped
from hospital_agent.settings import AgentSettings
from hospital_agent.trainer import backbone_spec_for, check_backbone, embed_site, run_templates

log = logging.getLogger("hospital_agent.session")


@dataclass
class RunSession:
    run_id: str
    config: RunConfig
    record: BackboneRecord  # what the bundle records about the backbone (and its logit scale)
    data: SiteEmbeddings
    prototypes: torch.Tensor  # C × D class text embeddings, in the site's class order
    prompts: tuple[str, ...]  # the templates, in the library's "{}" form

    @property
    def head_hidden(self) -> int:
        return self.config.train.head_hidden


def prepare_session(
    settings: AgentSettings,
    run_id: str,
    config: RunConfig,
    images: LabeledImages,
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> RunSession:
    """Raises ``IncompatibleRunError`` (backbone), ``WeightsUnavailableError``, ``DatasetError`` (no data)."""
    local = settings.backbone
    local_spec = None if local is None else BackboneSpec(local.model, local.weights, local.preprocess, local.seed)
    spec = backbone_spec_for(config, local_spec)
    event(log, "loading backbone", site=settings.site, run=run_id, backbone=spec.describe())
    backbone = load_backbone(spec, device)
    check_backbone(backbone, config)
    try:
        with EmbeddingCache(settings.effective_cache_dir) as cache:
            data = embed_site(
                backbone,
                images,
                cache,
                site=settings.site,
                split_seed=settings.data.split_seed,
                batch_size=settings.embed_batch_size,
                num_workers=settings.embed_workers,
                progress=progress,
            )
    except NoUsableImagesError as error:  # the list must be written before the refusal, not lost with it
        report_skipped(error.failed, settings.site, settings.state_dir, "embed")
        raise
    report_skipped(data.skipped[len(images.skipped) :], settings.site, settings.state_dir, "embed")
    if len(data.split.train) < 2:
        raise DatasetError(f"site {settings.site} has {len(data.split.train)} usable training image(s); need >= 2")
    templates = run_templates(config)
    prototypes = backbone.class_prototypes(data.classes, templates)
    record = BackboneRecord.of(backbone)
    del backbone
    if device.type == "cuda":
        torch.cuda.empty_cache()  # give the backbone's memory back to other GPU users
    return RunSession(run_id, config, record, data, prototypes, templates)
