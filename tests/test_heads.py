"""The recipe's formulas (SPEC A3) against values computed by hand."""

import math

import pytest
import torch

from webfg.heads import SoftmaxEQL, SubCenterArcFace, adaptive_margins, arcface_logits, logit_adjustment
from webfg.soup import soup


def test_adaptive_margins_hand_values():
    # f = n^-1/4 = [1, 1/2, 1/3]; m = 0.05 + 0.45 (f - 1/3) / (2/3)
    m = adaptive_margins([1, 16, 81])
    assert m.tolist() == pytest.approx([0.5, 0.05 + 0.45 * 0.25, 0.05], abs=1e-6)


def test_adaptive_margins_equal_counts_and_empty_class():
    assert adaptive_margins([7, 7, 7]).tolist() == pytest.approx([0.05] * 3)
    # an empty class counts as one sample: the rarest, largest margin
    assert adaptive_margins([0, 16]).tolist() == pytest.approx([0.5, 0.05])


def _head(weight, margins, k):
    head = SubCenterArcFace(2, len(margins), margins, k=k, scale=30.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(weight, dtype=torch.float32))
    return head


def test_subcentre_cosine_takes_max_over_subcentres():
    # class 0 has centres +x, +y; class 1 has -x, -y
    head = _head([[1, 0], [0, 1], [-1, 0], [0, -1]], [0.1, 0.1], k=2)
    cos = head.cosine(torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
    assert cos.tolist()[0] == pytest.approx([math.sqrt(0.5), -math.sqrt(0.5)], abs=1e-6)
    assert cos.tolist()[1] == pytest.approx([1.0, 0.0], abs=1e-6)
    # inference logits are s * cos, no margin
    assert head(torch.tensor([[2.0, 0.0]])).tolist()[0] == pytest.approx([30.0, 0.0], abs=1e-4)


def test_arcface_target_logit_both_branches_and_clamp():
    margins = torch.tensor([0.5, 0.5])
    cos = torch.tensor([[0.6, 0.3], [-0.95, 0.2], [1.0000001, 0.1]])
    out = arcface_logits(cos, torch.tensor([0, 0, 0]), margins)
    # cos θ = 0.6 > cos(π − 0.5): φ = cos(θ + m) = 0.6 cos 0.5 − 0.8 sin 0.5
    assert out[0, 0].item() == pytest.approx(0.6 * math.cos(0.5) - 0.8 * math.sin(0.5), abs=1e-6)
    # cos θ = −0.95 ≤ cos(π − 0.5) = −0.8776: φ = cos θ − m sin(π − m)
    assert out[1, 0].item() == pytest.approx(-0.95 - 0.5 * math.sin(math.pi - 0.5), abs=1e-6)
    # rounding above 1 is clamped (no NaN from sqrt(1 − cos²)): φ = cos(0 + m)
    assert out[2, 0].item() == pytest.approx(math.cos(0.5), abs=1e-6)
    # non-target logits untouched
    assert out[:, 1].tolist() == pytest.approx([0.3, 0.2, 0.1])


def test_arcface_uses_each_sample_class_margin():
    margins = torch.tensor([0.0, 0.5])
    cos = torch.tensor([[0.6, 0.6], [0.6, 0.6]])
    out = arcface_logits(cos, torch.tensor([0, 1]), margins)
    assert out[0].tolist() == pytest.approx([0.6, 0.6])  # margin 0: unchanged
    assert out[1, 1].item() == pytest.approx(0.6 * math.cos(0.5) - 0.8 * math.sin(0.5), abs=1e-6)


def test_eql_offsets_hand_values():
    eql = SoftmaxEQL(3, tau=1.0, eps=1e-4)
    eql.pos_grad.copy_(torch.tensor([4.0, 1.0, 0.0]))
    adj = eql.adjusted_logits(torch.zeros(2, 3), torch.tensor([0, 2]))
    # label 0: j gets log(max(p_j, ε) / p_0); the target stays
    assert adj[0].tolist() == pytest.approx([0.0, math.log(1 / 4), math.log(1e-4 / 4)], abs=1e-5)
    # label 2 (p_2 = 0 → ε)
    assert adj[1].tolist() == pytest.approx([math.log(4 / 1e-4), math.log(1 / 1e-4), 0.0], abs=1e-4)


def test_eql_collects_abs_gradients_of_positives_and_negatives():
    eql = SoftmaxEQL(3)
    logits = torch.zeros(2, 3, requires_grad=True)
    eql(logits, torch.tensor([0, 1])).backward()
    # fresh accumulators: no offset, softmax = 1/3; dL/dz = (1/3 − onehot) / 2
    assert eql.pos_grad.tolist() == pytest.approx([1 / 3, 1 / 3, 0.0])
    assert eql.neg_grad.tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 3])


def test_eql_statistics_do_not_depend_on_the_fp16_loss_scale():
    """Under fp16 the backward runs on loss x the GradScaler's scale; the trainer tells the
    criterion that scale and the accumulators must equal those of the unscaled loss."""
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 5), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    plain, scaled = SoftmaxEQL(5), SoftmaxEQL(5)
    for _ in range(3):  # the offsets read the accumulators: equal states give equal next losses
        a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        plain(a, labels).backward()
        scaled.loss_scale = torch.tensor(2.0**16)
        (scaled(b, labels) * 2.0**16).backward()
        assert torch.equal(scaled.pos_grad, plain.pos_grad) and torch.equal(scaled.neg_grad, plain.neg_grad)
    assert plain.pos_grad.sum() > 0
    # without being told, the statistics carry the scale (what the fix is about)
    unaware = SoftmaxEQL(5)
    (unaware(logits.clone().requires_grad_(), labels) * 2.0**16).backward()
    assert unaware.pos_grad.sum() > 1000 * SoftmaxEQL(5).pos_grad.sum() + 1
    # a backward that overflowed (the scaler then skips the step) adds nothing
    before = scaled.pos_grad.clone()
    c = logits.clone().requires_grad_()
    (scaled(c, labels) * float("inf")).backward()
    assert torch.equal(scaled.pos_grad, before)


def test_logit_adjustment_subtracts_log_prior():
    out = logit_adjustment(torch.zeros(1, 2), [3, 1])
    assert out.tolist()[0] == pytest.approx([-math.log(0.75), -math.log(0.25)], abs=1e-6)


def test_soup_is_elementwise_mean_of_float_tensors():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 4.0]), "n": torch.tensor(7)}
    out = soup([a, b])
    assert out["w"].tolist() == [2.0, 3.0] and out["w"].dtype == torch.float32
    assert out["n"].item() == 7  # integer buffers come from the last checkpoint
