"""The parts of the recipe that timm does not have (SPEC A3).

- ``adaptive_margins``: per-class ArcFace margins from the training list's class counts.
- ``SubCenterArcFace``: cosine head with k sub-centres per class and an additive
  angular margin on the target logit during training.
- ``SoftmaxEQL``: softmax equalisation loss driven by accumulated |gradients|.
- ``logit_adjustment``: post-hoc long-tail correction for the linear head.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def adaptive_margins(class_counts, margin_min: float = 0.05, margin_max: float = 0.5) -> torch.Tensor:
    """m_c = min + (max-min)·(f_c − min f)/(max f − min f), f_c = (1/n_c)^0.25.

    Rare classes get the large margin. Classes with no sample count as one; if all
    classes have the same count every margin is ``margin_min`` (the formula is 0/0).
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=1)
    f = counts.pow(-0.25)
    span = f.max() - f.min()
    scaled = margin_min + (margin_max - margin_min) * (f - f.min()) / span.clamp(min=1e-300)
    return torch.where(span > 0, scaled, torch.full_like(f, margin_min)).float()  # no host sync: works on meta


class SubCenterArcFace(nn.Module):
    """Sub-centre ArcFace (s·cos with margin on the target), SPEC A3.

    forward(features (B, d), labels (B,) or None) → logits (B, C) in float32.
    With labels the target logit becomes cos(θ+m_y) where cos θ > cos(π−m_y), else
    cos θ − m_y·sin(π−m_y) (keeps the logit monotone in θ); without labels (inference)
    it returns s·cos. Computed in fp32 whatever the autocast state, since cos θ
    near ±1 loses the angle in half precision.
    """

    def __init__(self, in_features: int, num_classes: int, margins, k: int = 3, scale: float = 30.0):
        super().__init__()
        self.num_classes, self.k, self.scale = num_classes, k, scale
        self.weight = nn.Parameter(torch.empty(num_classes * k, in_features))
        nn.init.xavier_uniform_(self.weight)
        margins = torch.as_tensor(margins, dtype=torch.float32)
        if margins.shape != (num_classes,):
            raise ValueError(f"need {num_classes} margins, got shape {tuple(margins.shape)}")
        self.register_buffer("margins", margins)

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """Max over the k sub-centres of the cosine between features and centres."""
        cos = F.linear(F.normalize(features.float()), F.normalize(self.weight.float()))
        return cos.view(-1, self.num_classes, self.k).amax(dim=2)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            cos = self.cosine(features)
            if labels is None:
                return self.scale * cos
            return self.scale * arcface_logits(cos, labels, self.margins)


def arcface_logits(cos: torch.Tensor, labels: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """Unscaled ArcFace logits: target column replaced by φ(θ, m_y), others untouched."""
    cos = cos.clamp(-1.0, 1.0)
    m = margins[labels]
    cos_y = cos.gather(1, labels[:, None]).squeeze(1)
    sin_y = (1.0 - cos_y * cos_y).clamp(min=0.0).sqrt()
    phi = cos_y * torch.cos(m) - sin_y * torch.sin(m)
    threshold = torch.cos(math.pi - m)
    phi = torch.where(cos_y > threshold, phi, cos_y - m * torch.sin(math.pi - m))
    return cos.scatter(1, labels[:, None], phi[:, None])


class SoftmaxEQL(nn.Module):
    """Softmax equalisation loss (the recipe's SoftmaxEQL, indicator = positive gradients).

    For a sample of class y every other logit j is raised by τ·log(max(p_j,ε)/max(p_y,ε)),
    where p_c is the |gradient| that class c's logit has received on its positive samples
    so far: classes that have seen little positive gradient (rare classes) are pushed
    down less by frequent ones. The accumulators are updated from the logits' gradient
    in backward (a tensor hook), summed over ranks when torch.distributed is initialised.

    Under fp16 the loss is multiplied by the GradScaler's scale before backward; the
    trainer sets ``loss_scale`` to it (a tensor or None) and the hook divides it out, so
    the statistics are those of the unscaled loss. A backward whose gradients overflowed
    (the scaler then skips the step) adds nothing.
    """

    def __init__(self, num_classes: int, tau: float = 1.0, eps: float = 1e-4):
        super().__init__()
        self.num_classes, self.tau, self.eps = num_classes, tau, eps
        self.loss_scale = None  # the GradScaler's scale of the next backward (None: unscaled)
        self.register_buffer("pos_grad", torch.zeros(num_classes))
        self.register_buffer("neg_grad", torch.zeros(num_classes))

    def adjusted_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        p = self.pos_grad.clamp(min=self.eps)
        offset = self.tau * (p[None, :].log() - p[labels][:, None].log())
        not_target = 1.0 - F.one_hot(labels, self.num_classes).to(logits.dtype)
        return logits + offset * not_target

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.requires_grad:
            one_hot = F.one_hot(labels, self.num_classes).float()
            logits.register_hook(lambda grad: self._collect(grad, one_hot))
        return F.cross_entropy(self.adjusted_logits(logits, labels), labels)

    @torch.no_grad()
    def _collect(self, grad: torch.Tensor, one_hot: torch.Tensor) -> None:
        g = grad.abs().float()
        if self.loss_scale is not None:
            g = g / self.loss_scale
        pos, neg = (g * one_hot).sum(0), (g * (1 - one_hot)).sum(0)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(pos)
            torch.distributed.all_reduce(neg)
        finite = torch.isfinite(pos).all() & torch.isfinite(neg).all()  # no host sync
        self.pos_grad += torch.where(finite, pos, torch.zeros_like(pos))
        self.neg_grad += torch.where(finite, neg, torch.zeros_like(neg))


def logit_adjustment(logits: torch.Tensor, class_counts, tau: float = 1.0) -> torch.Tensor:
    """Post-hoc long-tail correction: logits − τ·log(prior_c), prior from class counts."""
    counts = torch.as_tensor(class_counts, dtype=torch.float32, device=logits.device).clamp(min=1)
    prior = counts / counts.sum()
    return logits - tau * prior.log()
