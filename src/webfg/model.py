"""Model construction: a timm backbone plus one of the recipe's heads."""

from __future__ import annotations

import torch
import torch.nn as nn

from webfg.config import ModelConfig
from webfg.heads import SubCenterArcFace, adaptive_margins, logit_adjustment


class Classifier(nn.Module):
    """timm backbone + head. ``forward(x, labels)`` gives training logits (margin applied
    for ArcFace); ``predict_logits(x)`` gives the inference logits (s·cos for ArcFace,
    logit-adjusted for the linear head).

    ``cfg.pretrained_file`` (any layout webfg.convert reads: timm, MMCls/MMPretrain,
    MMSelfSup MAE, webfg) is loaded after construction unless ``load_pretrained`` is False
    (a model about to receive its own trained weights has no use for it).
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, class_counts, load_pretrained: bool = True):
        super().__init__()
        import timm

        self.cfg = cfg
        counts = torch.as_tensor(class_counts, dtype=torch.float32)
        self.register_buffer("class_counts", counts)
        kwargs = dict(cfg.arch_kwargs)
        kwargs.setdefault("drop_path_rate", cfg.drop_path)
        if cfg.head == "linear":
            self.backbone = timm.create_model(cfg.arch, num_classes=num_classes, **kwargs)
            self.head = None
        else:
            self.backbone = timm.create_model(cfg.arch, num_classes=0, **kwargs)
            self.head = SubCenterArcFace(
                self.backbone.num_features,
                num_classes,
                adaptive_margins(counts, cfg.margin_min, cfg.margin_max),
                k=cfg.arcface_k,
                scale=cfg.arcface_scale,
            )
        if cfg.pretrained_file and load_pretrained:
            from webfg.convert import load_weights

            load_weights(self, cfg.pretrained_file, mode="pretrained")

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out = self.backbone(x)
        return out if self.head is None else self.head(out, labels)

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = self(x).float()
        if self.head is None and self.cfg.logit_adjust_tau:
            logits = logit_adjustment(logits, self.class_counts, self.cfg.logit_adjust_tau)
        return logits
